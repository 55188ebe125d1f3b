//! Capability grants: what a plugin may reach beyond its own memory, as the
//! operator's config says, never as the plugin says. With no grant a plugin
//! has no filesystem, no network, no environment and no commands.
//!
//! - `scratch`: a fresh directory per operation, preopened read-write at
//!   `/scratch`, removed after the run unless the operator keeps it;
//! - `dirs`: host directories preopened at a guest path, read-only or
//!   read-write;
//! - `net`: outbound `host:port` rules, enforced on wasi:sockets TCP connects
//!   (by address) and on wasi:http requests (by name);
//! - `exec`: host commands with fixed argument patterns, through our
//!   `opal:plugin/exec` interface ([`super::exec`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where a scratch directory appears inside the guest.
pub const SCRATCH_GUEST_PATH: &str = "/scratch";

/// Everything one run may reach.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The run's scratch directory on the host, if granted.
    pub scratch: Option<PathBuf>,
    /// Host directories, each at a guest path.
    pub dirs: Vec<DirGrant>,
    /// Outbound network rules.
    pub net: Vec<NetRule>,
    /// Commands the plugin may run.
    pub exec: Vec<ExecRule>,
}

/// A host directory a plugin may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it (absolute).
    pub guest: String,
    /// Whether the plugin may write there.
    pub writable: bool,
}

/// One outbound rule: `host:port`, where host is `*`, an IP address, a CIDR
/// block (`10.0.0.0/8`), a name (`db.internal`) or a name suffix
/// (`*.example.com`), and port is `*`, a number or a range (`8000-8099`).
/// Names match wasi:http requests by name; for raw TCP connects, which carry
/// only an address, a name rule matches the addresses the name resolves to
/// when the run starts, and suffix rules never match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    text: String,
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Cidr(IpAddr, u8),
    Name(String),
    Suffix(String),
}

impl std::str::FromStr for NetRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("net rule {text:?}: {why} (expected host:port, e.g. 10.0.0.0/8:22 or *.example.com:443)")
        };
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (host, port) = rest.split_once("]:").ok_or_else(|| bad("an IPv6 host must be [addr]:port"))?;
                (host, port)
            }
            None => text.rsplit_once(':').ok_or_else(|| bad("no port"))?,
        };
        let ports = match port {
            "*" => (0, u16::MAX),
            range if range.contains('-') => {
                let (a, b) = range.split_once('-').expect("contains -");
                let (a, b) =
                    (a.parse().map_err(|_| bad("bad port range"))?, b.parse().map_err(|_| bad("bad port range"))?);
                if a > b {
                    return Err(bad("the port range is backwards"));
                }
                (a, b)
            }
            one => {
                let p = one.parse().map_err(|_| bad("bad port"))?;
                (p, p)
            }
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some((ip, bits)) = host.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| bad("bad CIDR address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| bad("bad CIDR prefix length"))?;
            HostPattern::Cidr(ip, bits)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Cidr(ip, if ip.is_ipv4() { 32 } else { 128 })
        } else if let Some(suffix) = host.strip_prefix("*.") {
            valid_name(suffix)
                .then(|| HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase())))
                .ok_or_else(|| bad("bad name"))?
        } else {
            valid_name(host).then(|| HostPattern::Name(host.to_ascii_lowercase())).ok_or_else(|| bad("bad host"))?
        };
        Ok(NetRule { text: text.to_owned(), host, ports })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl std::fmt::Display for NetRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl NetRule {
    fn port_ok(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    /// Whether a request to `host:port` by name (wasi:http) is allowed.
    pub fn allows_name(&self, host: &str, port: u16) -> bool {
        if !self.port_ok(port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Name(name) => host == *name,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Cidr(..) => host.parse().is_ok_and(|ip| self.allows_ip(ip)),
        }
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Cidr(net, bits) => in_cidr(ip, *net, *bits),
            HostPattern::Name(_) | HostPattern::Suffix(_) => false,
        }
    }

    /// The name to resolve at run start, for a name rule.
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            HostPattern::Name(name) => Some(name),
            _ => None,
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The net rules of one run with their names resolved: what a TCP connect
/// to an address is checked against.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    rules: Vec<NetRule>,
    /// (address, rule index) for every address a name rule resolved to.
    resolved: Vec<(IpAddr, usize)>,
}

impl NetPolicy {
    /// Resolves the name rules (failures just match nothing).
    pub async fn resolve(rules: &[NetRule]) -> NetPolicy {
        let mut resolved = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(name) = rule.name()
                && let Ok(addrs) = tokio::net::lookup_host((name, 0)).await
            {
                resolved.extend(addrs.map(|a| (a.ip(), i)));
            }
        }
        NetPolicy { rules: rules.to_vec(), resolved }
    }

    /// Whether a TCP connect to `addr` is allowed.
    pub fn allows_connect(&self, addr: SocketAddr) -> bool {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr.ip()),
            v4 => v4,
        };
        self.rules.iter().any(|r| r.port_ok(addr.port()) && r.allows_ip(ip))
            || self.resolved.iter().any(|(a, i)| *a == ip && self.rules[*i].port_ok(addr.port()))
    }

    /// Whether an HTTP request to `host:port` is allowed.
    pub fn allows_http(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.allows_name(host, port))
    }

    /// True if no rule is granted.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// One command a plugin may run: the program and a pattern per argument,
/// where `*` is any one argument and a final `**` any number of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRule {
    /// The program, an absolute host path.
    pub command: PathBuf,
    /// Argument patterns.
    pub args: Vec<String>,
}

impl ExecRule {
    /// Whether `command args` is this rule.
    pub fn allows(&self, command: &str, args: &[String]) -> bool {
        if Path::new(command) != self.command {
            return false;
        }
        let rest_any = self.args.last().is_some_and(|a| a == "**");
        let fixed = if rest_any { &self.args[..self.args.len() - 1] } else { &self.args[..] };
        if args.len() < fixed.len() || (!rest_any && args.len() != fixed.len()) {
            return false;
        }
        fixed.iter().zip(args).all(|(pattern, arg)| pattern == "*" || pattern == arg)
    }

    /// The rule as the operator wrote it, for messages.
    pub fn describe(&self) -> String {
        std::iter::once(self.command.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A per-run scratch directory, removed when dropped unless kept.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// Creates `root/name`, empty.
    pub fn create(root: &Path, name: &str, keep: bool) -> std::io::Result<Scratch> {
        let path = root.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path, keep })
    }

    /// Where it is on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a scratch directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> NetRule {
        text.parse().unwrap()
    }

    #[test]
    fn net_rules_parse_and_match() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let policy = NetPolicy { rules: vec![rule("127.0.0.1:22"), rule("10.0.0.0/8:8000-8099")], resolved: vec![] };
        assert!(policy.allows_connect(addr("127.0.0.1:22")));
        assert!(!policy.allows_connect(addr("127.0.0.1:23")));
        assert!(!policy.allows_connect(addr("127.0.0.2:22")));
        assert!(policy.allows_connect(addr("10.9.8.7:8050")));
        assert!(!policy.allows_connect(addr("10.9.8.7:8100")));
        assert!(policy.allows_connect(addr("[::ffff:127.0.0.1]:22")), "IPv4-mapped addresses count as IPv4");

        assert!(rule("*.example.com:443").allows_name("api.Example.com", 443));
        assert!(!rule("*.example.com:443").allows_name("example.com", 443), "a suffix rule needs a subdomain");
        assert!(!rule("*.example.com:443").allows_name("evilexample.com", 443));
        assert!(rule("localhost:*").allows_name("localhost", 9));
        assert!(rule("[::1]:80").allows_name("[::1]", 80));
        assert!(rule("*:443").allows_name("anything", 443));
        for bad in ["nohost", "a:b", "1.2.3.4/33:1", "host:9-1", "bad_name:1", ":80"] {
            assert!(bad.parse::<NetRule>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn exec_rules_match_fixed_patterns() {
        let rule = ExecRule { command: "/usr/bin/systemctl".into(), args: vec!["restart".into(), "*".into()] };
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(rule.allows("/usr/bin/systemctl", &args(&["restart", "nginx"])));
        assert!(!rule.allows("/usr/bin/systemctl", &args(&["stop", "nginx"])));
        assert!(!rule.allows("/usr/bin/systemctl", &args(&["restart", "nginx", "--now"])));
        assert!(!rule.allows("/bin/systemctl", &args(&["restart", "nginx"])));
        let open = ExecRule { command: "/bin/echo".into(), args: vec!["**".into()] };
        assert!(open.allows("/bin/echo", &args(&[])) && open.allows("/bin/echo", &args(&["a", "b"])));
    }

    #[test]
    fn scratch_is_removed_unless_kept() {
        let root = tempfile::tempdir().unwrap();
        let scratch = Scratch::create(root.path(), "op1", false).unwrap();
        std::fs::write(scratch.path().join("f"), "x").unwrap();
        let path = scratch.path().to_owned();
        drop(scratch);
        assert!(!path.exists());
        let kept = Scratch::create(root.path(), "op2", true).unwrap();
        let path = kept.path().to_owned();
        drop(kept);
        assert!(path.exists());
    }
}
