//! The SSH identification exchange, server side as the client sees it
//! (RFC 4253 §4.2): the server may send lines of other text first; then
//! `SSH-protoversion-softwareversion SP comments CR LF`, at most 255 bytes
//! with the CR LF.
//!
//! [`BannerReader`] takes the bytes as they arrive, so a caller can read with
//! timeouts and stop as soon as the line is complete.

use std::fmt;

/// The longest identification line, CR LF included (RFC 4253 §4.2).
pub const MAX_IDENT: usize = 255;
/// How much other text may come before the identification: a server that
/// says more than this without one is not an SSH server.
pub const MAX_PREAMBLE: usize = 8192;

/// A parsed identification line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    /// `2.0`, or `1.99` for a server that also speaks SSH 1.
    pub protocol_version: String,
    /// e.g. `OpenSSH_9.6p1`.
    pub software_version: String,
    /// What follows the space, e.g. `Ubuntu-3ubuntu13`.
    pub comments: Option<String>,
    /// The whole line, without CR LF.
    pub line: String,
    /// The lines of other text the server sent first.
    pub preamble: Vec<String>,
}

/// Why what the server sent is not an SSH identification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSsh {
    /// An `SSH-` line longer than [`MAX_IDENT`].
    TooLong,
    /// [`MAX_PREAMBLE`] bytes of other text and no `SSH-` line.
    NoIdentification(String),
    /// Bytes no text line has (NUL and other control characters).
    Binary(String),
    /// An `SSH-` line that does not follow the grammar.
    Malformed(String, &'static str),
    /// The server closed the connection first; what it sent, if anything.
    Closed(Option<String>),
}

impl fmt::Display for NotSsh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotSsh::TooLong => {
                write!(f, "its identification line is longer than the {MAX_IDENT} bytes RFC 4253 allows")
            }
            NotSsh::NoIdentification(first) => {
                write!(f, "it sent {MAX_PREAMBLE} bytes without an SSH identification line (first line: {first})")
            }
            NotSsh::Binary(seen) => write!(f, "it sent binary data, not an SSH identification line: {seen}"),
            NotSsh::Malformed(line, why) => write!(f, "its identification line {line} is malformed: {why}"),
            NotSsh::Closed(None) => write!(f, "it closed the connection without sending anything"),
            NotSsh::Closed(Some(first)) => {
                write!(f, "it closed the connection without an SSH identification line (it sent: {first})")
            }
        }
    }
}

/// Collects the server's first bytes until the identification line is whole.
#[derive(Debug, Default)]
pub struct BannerReader {
    /// The line being received.
    pending: Vec<u8>,
    /// Complete lines of other text so far.
    preamble: Vec<String>,
    /// Bytes of other text so far.
    preamble_bytes: usize,
}

impl BannerReader {
    /// Takes `bytes`; returns the identification once its line is complete.
    /// What arrives after it (the key exchange) is ignored.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Identification>, NotSsh> {
        for &byte in bytes {
            if byte != b'\n' {
                self.pending.push(byte);
                self.check_pending()?;
                continue;
            }
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.starts_with(b"SSH-") {
                return parse(&line, std::mem::take(&mut self.preamble)).map(Some);
            }
            self.preamble_bytes += line.len() + 1;
            self.preamble.push(String::from_utf8_lossy(&line).into_owned());
        }
        Ok(None)
    }

    /// What to say when the server closes the connection before the line.
    pub fn closed(&self) -> NotSsh {
        let first =
            self.preamble.first().map(|l| l.as_bytes()).or((!self.pending.is_empty()).then_some(&self.pending[..]));
        NotSsh::Closed(first.map(quote))
    }

    /// Fails as soon as the partial line shows the server is not SSH.
    fn check_pending(&self) -> Result<(), NotSsh> {
        let byte = *self.pending.last().expect("a byte was just pushed");
        if byte < 0x20 && byte != b'\t' && byte != b'\r' || byte == 0x7f {
            return Err(NotSsh::Binary(quote(&self.pending)));
        }
        if self.pending.starts_with(b"SSH-") && self.pending.len() + 1 > MAX_IDENT {
            return Err(NotSsh::TooLong);
        }
        if self.preamble_bytes + self.pending.len() > MAX_PREAMBLE {
            let first = self.preamble.first().map_or(&self.pending[..], |l| l.as_bytes());
            return Err(NotSsh::NoIdentification(quote(first)));
        }
        Ok(())
    }
}

/// Parses `SSH-protoversion-softwareversion[ SP comments]` (no CR LF).
fn parse(line: &[u8], preamble: Vec<String>) -> Result<Identification, NotSsh> {
    if line.len() + 2 > MAX_IDENT {
        return Err(NotSsh::TooLong);
    }
    let malformed = |why| NotSsh::Malformed(quote(line), why);
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(malformed("it must be printable US-ASCII"));
    }
    let text = std::str::from_utf8(line).expect("ASCII is UTF-8");
    let rest = &text["SSH-".len()..];
    let (protocol, rest) =
        rest.split_once('-').ok_or_else(|| malformed("no software version after the protocol version"))?;
    let (software, comments) = match rest.split_once(' ') {
        Some((software, comments)) => (software, Some(comments.to_owned())),
        None => (rest, None),
    };
    if protocol.is_empty() || protocol.contains(' ') {
        return Err(malformed("the protocol version is empty or has a space"));
    }
    if software.is_empty() {
        return Err(malformed("the software version is empty"));
    }
    Ok(Identification {
        protocol_version: protocol.to_owned(),
        software_version: software.to_owned(),
        comments,
        line: text.to_owned(),
        preamble,
    })
}

/// `bytes` as a short quoted string for a message: at most 60 characters,
/// control characters escaped.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<Identification>, NotSsh> {
        BannerReader::default().push(bytes)
    }

    #[test]
    fn parses_an_openssh_banner() {
        let id = read(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n").unwrap().unwrap();
        assert_eq!(id.protocol_version, "2.0");
        assert_eq!(id.software_version, "OpenSSH_9.6p1");
        assert_eq!(id.comments.as_deref(), Some("Ubuntu-3ubuntu13"));
        assert_eq!(id.line, "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13");
        assert!(id.preamble.is_empty());
    }

    #[test]
    fn takes_other_lines_first_byte_by_byte_and_a_bare_lf() {
        let mut reader = BannerReader::default();
        let mut found = None;
        for byte in b"Welcome to the bastion\r\nauthorised use only\nSSH-1.99-Cisco-1.25\n" {
            found = reader.push(&[*byte]).unwrap();
        }
        let id = found.expect("the identification");
        assert_eq!((id.protocol_version.as_str(), id.software_version.as_str()), ("1.99", "Cisco-1.25"));
        assert_eq!(id.comments, None);
        assert_eq!(id.preamble, ["Welcome to the bastion", "authorised use only"]);
    }

    #[test]
    fn waits_for_the_end_of_the_line() {
        let mut reader = BannerReader::default();
        assert_eq!(reader.push(b"SSH-2.0-dropbear").unwrap(), None);
        assert_eq!(reader.push(b"_2022.83\r").unwrap(), None);
        assert_eq!(reader.push(b"\n").unwrap().unwrap().software_version, "dropbear_2022.83");
    }

    #[test]
    fn refuses_what_is_not_ssh() {
        let long = format!("SSH-2.0-{}", "A".repeat(300));
        assert!(matches!(read(long.as_bytes()), Err(NotSsh::TooLong)), "no need to wait for the line end");
        let exactly = format!("SSH-2.0-{}\r\n", "A".repeat(MAX_IDENT - 10));
        assert_eq!(exactly.len(), MAX_IDENT);
        assert!(read(exactly.as_bytes()).unwrap().is_some(), "255 bytes with CR LF is allowed");
        let one_more = format!("SSH-2.0-{}\r\n", "A".repeat(MAX_IDENT - 9));
        assert!(matches!(read(one_more.as_bytes()), Err(NotSsh::TooLong)));

        assert!(matches!(read(b"\x16\x03\x01\x02\x00"), Err(NotSsh::Binary(_))));
        assert_eq!(
            read(b"SSH-2.0\r\n"),
            Err(NotSsh::Malformed("\"SSH-2.0\"".into(), "no software version after the protocol version"))
        );
        assert!(matches!(read(b"SSH-2.0-\r\n"), Err(NotSsh::Malformed(_, "the software version is empty"))));
        let chatter = "HTTP/1.1 400 Bad Request\r\n".repeat(400);
        let Err(NotSsh::NoIdentification(first)) = read(chatter.as_bytes()) else { panic!("8 KiB of chatter") };
        assert_eq!(first, "\"HTTP/1.1 400 Bad Request\"");
    }

    #[test]
    fn says_what_came_before_a_close() {
        let mut reader = BannerReader::default();
        assert_eq!(reader.closed().to_string(), "it closed the connection without sending anything");
        reader.push(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        assert_eq!(
            reader.closed().to_string(),
            "it closed the connection without an SSH identification line (it sent: \"HTTP/1.1 400 Bad Request\")"
        );
    }
}
