//! [`Url`]: the parts of an `http://` or `https://` URL a GET needs, parsed
//! strictly enough that a plugin can reject a bad URL in `validate`.

use std::fmt;

use super::{ErrorKind, HttpError};

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP, port 80 by default.
    Http,
    /// HTTP over TLS (verified against the webpki roots), port 443 by default.
    Https,
}

/// An absolute `http(s)://host[:port][/path][?query]` URL; a `#fragment` is
/// dropped, user info is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The scheme.
    pub scheme: Scheme,
    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    /// The port, if the URL names one.
    pub port: Option<u16>,
    /// The path and query, at least `/`.
    pub path_and_query: String,
}

impl Url {
    /// Parses `text`, saying what is wrong with it.
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| HttpError::new(ErrorKind::InvalidUrl, format!("invalid URL {text:?}: {why}"));
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (Scheme::Https, rest)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path_and_query = match path {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        if path_and_query.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad("the path has spaces or control characters (percent-encode them)"));
        }
        if authority.contains('@') {
            return Err(bad("user info (user@host) is not supported; send credentials in a header"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']').ok_or_else(|| bad("an IPv6 host needs a closing ]"))?;
                addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad("bad IPv6 address"))?;
                (format!("[{addr}]"), after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let name_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
        if !host.starts_with('[') && !host.bytes().all(name_ok) {
            return Err(bad("the host has characters a host name cannot have"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("bad port"))?),
        };
        Ok(Url { scheme, host: host.to_ascii_lowercase(), port, path_and_query })
    }

    /// The port, or the scheme's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        })
    }

    /// `host` or `host:port`, as the request's authority.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_get_needs() {
        let url = Url::parse("HTTP://Example.com:8080/a/b?c=d#frag").unwrap();
        assert_eq!(url.scheme, Scheme::Http);
        assert_eq!((url.host.as_str(), url.port, url.path_and_query.as_str()), ("example.com", Some(8080), "/a/b?c=d"));
        assert_eq!(url.to_string(), "http://example.com:8080/a/b?c=d");
        let url = Url::parse("https://[::1]/").unwrap();
        assert_eq!((url.authority(), url.port_or_default()), ("[::1]".to_owned(), 443));
        assert_eq!(Url::parse("http://h?x=1").unwrap().path_and_query, "/?x=1");
        assert_eq!(Url::parse("http://h").unwrap().path_and_query, "/");
    }

    #[test]
    fn says_what_is_wrong() {
        for (url, why) in [
            ("ftp://h/", "must start with http:// or https://"),
            ("http:///x", "no host"),
            ("http://h:99999/", "bad port"),
            ("http://h:0/", "bad port"),
            ("http://u:p@h/", "user info"),
            ("http://h/a b", "spaces"),
            ("http://[::1/", "closing ]"),
            ("http://ex ample/", "host name cannot have"),
        ] {
            let error = Url::parse(url).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidUrl);
            assert!(error.message().contains(why), "{url}: {error}");
        }
    }
}
