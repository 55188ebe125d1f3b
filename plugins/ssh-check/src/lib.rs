//! `ssh-check`: is there a working SSH server at `host:port`? Seed 001's
//! "test connection", without credentials: a TCP connect, then the server's
//! identification line (RFC 4253 §4.2), parsed by [`banner`].
//!
//! It reports the connect latency, the server software and the protocol
//! version in its details. Each way it can fail has its own message: the
//! name does not resolve, the port is closed (connection refused), the port
//! is silent (nothing within `timeout_ms`), the peer is not an SSH server
//! (other text, binary data, an oversized line, a close), or the operator's
//! `net` grant does not allow the address (denied).
//!
//! Plain `std::net` does the work: on wasm32-wasip2 it is wasi:sockets, which
//! the host allows only towards the granted `host:port`s, and natively it is
//! the OS, so the unit tests below talk to real loopback listeners.

pub mod banner;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use opal_sdk::context::CANCEL_POLL;
use opal_sdk::prelude::*;

use self::banner::{BannerReader, Identification};

/// What to check.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The SSH server: a host name or an IP address (no port: see `port`).
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Its TCP port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// How long connecting and then waiting for the server's identification
    /// may take together, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 100, max = 120000))]
    pub timeout_ms: u64,
}

fn default_port() -> u16 {
    22
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// The details the dashboard shows: where, how fast, and what answered;
/// or, on a failure, at which stage and why.
#[derive(Debug, Default, Serialize)]
struct Report {
    host: String,
    port: u16,
    /// The address connected to (or tried last).
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// The TCP connect, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// From connected to the identification line, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    banner_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comments: Option<String>,
    /// The identification line as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    banner: Option<String>,
    /// Where it failed: `resolve`, `connect` or `banner`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What we send once the server has identified itself, so its log shows a
/// client that said who it is rather than a malformed exchange.
const CLIENT_IDENT: &[u8] = concat!("SSH-2.0-OpalSshCheck_", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes();

/// The plugin.
pub struct SshCheck;

impl Plugin for SshCheck {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("ssh-check", env!("CARGO_PKG_VERSION"), "SSH check")
            .description(
                "Connects to host:port and reads the SSH server's identification: latency, software, protocol.",
            )
            .timeout(Duration::from_secs(180))
            .retry_safe()
    }

    fn validate(p: &Params) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let host = p.host.as_str();
        if host.is_empty() {
            errors.push(FieldError::new("host", "is empty"));
        } else if host.chars().any(|c| c.is_whitespace() || c.is_control() || "/@".contains(c)) {
            errors.push(FieldError::new("host", "must be a host name or an IP address, without spaces, / or @"));
        } else if host.contains(':') && host.trim_matches(['[', ']']).parse::<std::net::Ipv6Addr>().is_err() {
            errors.push(FieldError::new("host", "must not include a port: give it in `port`"));
        }
        if p.port == 0 {
            errors.push(FieldError::new("port", "must be between 1 and 65535"));
        }
        if !(100..=120_000).contains(&p.timeout_ms) {
            errors.push(FieldError::new("timeout_ms", "must be between 100 and 120000"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn run(ctx: &Context, _target: &str, p: Params) -> Result<Outcome> {
        let host = p.host.trim_matches(['[', ']']).to_owned();
        let timeout = Duration::from_millis(p.timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut report = Report { host: p.host.clone(), port: p.port, ..Report::default() };

        ctx.progress(0, &format!("resolving {}", p.host));
        let addresses: Vec<SocketAddr> = match (host.as_str(), p.port).to_socket_addrs() {
            Ok(found) => found.collect(),
            Err(e) => return Err(fail(ctx, &mut report, "resolve", format!("cannot resolve {}: {e}", p.host))),
        };
        if addresses.is_empty() {
            return Err(fail(ctx, &mut report, "resolve", format!("{} has no address", p.host)));
        }

        ctx.progress(10, &format!("connecting to {}:{}", p.host, p.port));
        let connected = Instant::now();
        let (mut stream, address) = connect(&addresses, deadline, timeout).map_err(|(address, why)| {
            report.address = Some(address.to_string());
            fail(ctx, &mut report, "connect", why)
        })?;
        let latency = connected.elapsed();
        report.address = Some(address.to_string());
        report.latency_ms = Some(millis(latency));
        info!(ctx, "connected to {address} in {} ms", millis(latency));
        ctx.check_cancelled()?;

        ctx.progress(40, &format!("connected to {address}; waiting for the SSH identification"));
        let greeted = Instant::now();
        let id = match read_identification(ctx, &mut stream, deadline) {
            Ok(id) => id,
            Err(Wait::Cancelled) => return Err(Error::Cancelled),
            Err(Wait::Failed(why)) => {
                return Err(fail(ctx, &mut report, "banner", format!("{address} is not an SSH server: {why}")));
            }
            Err(Wait::TimedOut) => {
                let why =
                    format!("{address} accepted the connection but sent no SSH identification within {timeout:?}");
                return Err(fail(ctx, &mut report, "banner", why));
            }
            Err(Wait::Io(e)) => {
                return Err(fail(ctx, &mut report, "banner", format!("reading from {address} failed: {e}")));
            }
        };
        report.banner_ms = Some(millis(greeted.elapsed()));
        for line in &id.preamble {
            debug!(ctx, "before its identification the server said: {line}");
        }
        info!(ctx, "the server identifies itself as {}", id.line);
        if id.protocol_version != "2.0" && id.protocol_version != "1.99" {
            warn!(ctx, "protocol version {} is not SSH 2: current clients will not connect", id.protocol_version);
        }
        // Courtesy only: the check is done whether or not this arrives.
        let _ = stream.write_all(CLIENT_IDENT);

        let message = format!(
            "{} (SSH {}) answers on {address}; connected in {} ms",
            id.software_version,
            id.protocol_version,
            millis(latency)
        );
        fill(&mut report, id);
        ctx.details(&report);
        ctx.progress(100, &message);
        Ok(Outcome::message(message))
    }
}

/// Tries each address until one connects, within what is left of the
/// timeout. On failure: the last address tried and why each one failed.
fn connect(
    addresses: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), (SocketAddr, String)> {
    let mut failures = Vec::new();
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        // On wasm32-wasip2, std reports a refused non-blocking connect as
        // done; the socket's pending error (SO_ERROR) says what happened.
        let connected = TcpStream::connect_timeout(address, left)
            .and_then(|stream| stream.take_error().map(|pending| (stream, pending)));
        match connected {
            Ok((stream, None)) => return Ok((stream, *address)),
            Ok((_, Some(e))) | Err(e) => failures.push(match e.kind() {
                ErrorKind::ConnectionRefused => format!("connection refused by {address}: nothing listens there"),
                ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                    format!("no TCP connection to {address} within {timeout:?} (a firewall may drop the packets)")
                }
                ErrorKind::PermissionDenied => format!(
                    "connecting to {address} was denied: this plugin's net grant does not allow it \
                     ([types.ssh-check.grants] net in the server config; {e})"
                ),
                _ => format!("cannot connect to {address}: {e}"),
            }),
        }
    }
    Err((*addresses.last().expect("at least one address"), failures.join("; ")))
}

/// Why no identification came.
enum Wait {
    Cancelled,
    TimedOut,
    Failed(banner::NotSsh),
    Io(std::io::Error),
}

/// Reads until the identification line is whole, in slices of
/// [`CANCEL_POLL`] so a cancel is noticed while the server is silent.
fn read_identification(ctx: &Context, stream: &mut TcpStream, deadline: Instant) -> Result<Identification, Wait> {
    let mut reader = BannerReader::default();
    let mut buffer = [0u8; 512];
    loop {
        if ctx.cancelled() {
            return Err(Wait::Cancelled);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Wait::TimedOut);
        }
        let slice = left.min(CANCEL_POLL).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(slice)).map_err(Wait::Io)?;
        match stream.read(&mut buffer) {
            Ok(0) => return Err(Wait::Failed(reader.closed())),
            Ok(n) => {
                if let Some(id) = reader.push(&buffer[..n]).map_err(Wait::Failed)? {
                    return Ok(id);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(Wait::Io(e)),
        }
    }
}

fn fill(report: &mut Report, id: Identification) {
    report.protocol_version = Some(id.protocol_version);
    report.software_version = Some(id.software_version);
    report.comments = id.comments;
    report.banner = Some(id.line);
}

/// Records the failure in the details, for the dashboard, and returns it.
fn fail(ctx: &Context, report: &mut Report, stage: &'static str, why: String) -> Error {
    report.stage = Some(stage);
    report.error = Some(why.clone());
    ctx.details(report);
    Error::Failed(why)
}

/// Milliseconds with one decimal: loopback connects take well under one.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

opal_sdk::export_plugin!(SshCheck);

#[cfg(test)]
mod tests;
