//! Which names a request may address the server by (its `Host` header).
//!
//! A **DNS rebinding** page is served from a name its author controls
//! (`http://evil.example:8080`), then points that name at 127.0.0.1. The
//! browser then sends the page's requests to this server with
//! `Host: evil.example:8080` and `Origin: http://evil.example:8080`: to the
//! browser it is one origin, so comparing `Origin` with `Host` says nothing.
//! What such a request cannot fake is a `Host` that names loopback, because
//! the page's origin would then be loopback too. So a host is trusted when it
//! is `localhost` or a loopback address (any port), or is listed in
//! `allowed_hosts` by whoever configured the server (a reverse proxy's public
//! name, say). `guard` decides what an untrusted host may still do.

use std::net::{IpAddr, Ipv6Addr};

/// Whether `host` (a `Host` header: `name`, `name:port`, `[v6]` or `[v6]:port`)
/// is trusted: loopback, or matched by an entry of `allowed`. An entry without
/// a port matches the name on any port; one with a port matches exactly.
/// Names compare case-insensitively.
pub(crate) fn trusted(host: &str, allowed: &[String]) -> bool {
    let Some((name, port)) = split(host) else { return false };
    is_loopback(name)
        || allowed.iter().any(|entry| match split(entry) {
            Some((n, None)) => n.eq_ignore_ascii_case(name),
            Some((n, Some(p))) => n.eq_ignore_ascii_case(name) && port == Some(p),
            None => false,
        })
}

/// `localhost`, `127.0.0.0/8`, `[::1]` (and `[::ffff:127.x.y.z]`).
fn is_loopback(name: &str) -> bool {
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.to_canonical().is_loopback());
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host` as (name, port); `None` if it is not shaped like a `Host` header.
fn split(host: &str) -> Option<(&str, Option<&str>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        match &host[end..] {
            "" => (&host[..end], None),
            rest => (&host[..end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok =
        name.starts_with('[') || (!name.is_empty() && !name.contains(['/', '?', '#', '@', ' ', '*', ':', '[', ']']));
    (port_ok && name_ok).then_some((name, port))
}

/// Checks an `allowed_hosts` entry from the config.
pub(crate) fn check_entry(entry: &str) -> Result<(), String> {
    if entry.contains("://") || split(entry).is_none() {
        return Err(format!(
            "auth.allowed_hosts: {entry:?} is not a host like \"ops.example.com\" or \"ops.example.com:8443\" \
             (a name or address, optional port; no scheme, path or wildcard)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_trusted_on_any_port() {
        for host in ["localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:0", "127.1.2.3:9", "[::1]", "[::1]:8080"] {
            assert!(trusted(host, &[]), "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "localhost.",
            "0.0.0.0:8080",
            "10.0.0.1",
            "[::2]:80",
            "127.0.0.1.evil.example",
            "",
            ":8080",
            "localhost:http",
        ] {
            assert!(!trusted(host, &[]), "{host}");
        }
    }

    #[test]
    fn listed_hosts_are_trusted_with_or_without_a_port() {
        let allowed = vec!["Ops.Example.com".to_owned(), "opal.internal:8443".to_owned()];
        assert!(trusted("ops.example.com", &allowed));
        assert!(trusted("ops.example.com:443", &allowed));
        assert!(trusted("opal.internal:8443", &allowed));
        assert!(!trusted("opal.internal:8080", &allowed));
        assert!(!trusted("opal.internal", &allowed));
        assert!(!trusted("evil.example", &allowed));
    }

    #[test]
    fn config_entries_are_hosts() {
        assert!(check_entry("ops.example.com").is_ok());
        assert!(check_entry("ops.example.com:8443").is_ok());
        assert!(check_entry("[fd00::1]:8080").is_ok());
        for bad in ["https://ops.example.com", "ops.example.com/path", "*.example.com", "", "a:b"] {
            assert!(check_entry(bad).is_err(), "{bad}");
        }
    }
}
