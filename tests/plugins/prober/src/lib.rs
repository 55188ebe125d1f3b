//! `prober`: a test-only plugin that tries exactly the accesses its params
//! list (read or write a file, open a TCP connection, run a command) and
//! reports each as `allowed: ...` or `denied: ...` in its details, so the
//! tests can check that grants allow what they say and nothing more.

use std::io::{Read, Write};

use opal_sdk::{Context, Error, Outcome, Plugin, PluginInfo};
use schemars::JsonSchema;
use serde::Deserialize;

/// The accesses to try, in this order.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Params {
    /// Files to read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Files to write (a line of text).
    #[serde(default)]
    pub write: Vec<String>,
    /// `host:port` addresses to connect to; a line is read back.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Command lines to run: the program, then its arguments.
    #[serde(default)]
    pub exec: Vec<Vec<String>>,
    /// `http://host:port/path` URLs to GET through wasi:http; the status is reported.
    #[serde(default)]
    pub http: Vec<String>,
}

/// The plugin.
pub struct Prober;

fn said<T: std::fmt::Display, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(what) => format!("allowed: {what}"),
        Err(why) => format!("denied: {why}"),
    }
}

impl Plugin for Prober {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("prober", "0.1.0", "Prober (test only)")
    }

    fn run(ctx: &Context, _target: &str, params: Params) -> Result<Outcome, Error> {
        let mut report = serde_json::Map::new();
        for path in &params.read {
            report.insert(
                format!("read {path}"),
                said(std::fs::read_to_string(path).map(|t| t.trim().to_owned())).into(),
            );
        }
        for path in &params.write {
            let written = std::fs::File::create(path).and_then(|mut f| f.write_all(b"probed\n")).map(|()| "wrote");
            report.insert(format!("write {path}"), said(written).into());
        }
        for address in &params.connect {
            let line = std::net::TcpStream::connect(address.as_str()).and_then(|mut s| {
                let mut text = String::new();
                s.read_to_string(&mut text).map(|_| text.trim().to_owned())
            });
            report.insert(format!("connect {address}"), said(line).into());
        }
        for line in &params.exec {
            let Some((command, args)) = line.split_first() else { continue };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = opal_sdk::exec::run(command, &args)
                .map(|o| format!("status {}, stdout {:?}", o.status, o.stdout.trim()));
            report.insert(format!("exec {}", line.join(" ")), said(out).into());
        }
        for url in &params.http {
            report.insert(format!("http {url}"), said(http_get(url)).into());
        }
        ctx.progress(100, "probed");
        Ok(Outcome::message("probed").with_details(serde_json::Value::Object(report)))
    }
}

/// GETs `url` (`http://authority/path`) through wasi:http; returns the status.
#[cfg(target_family = "wasm")]
fn http_get(url: &str) -> Result<String, String> {
    use wasi::http::{outgoing_handler, types};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let request = types::OutgoingRequest::new(types::Fields::new());
    request.set_scheme(Some(&types::Scheme::Http)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(&path)).map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending.get().ok_or("no response")?.map_err(|()| "response taken")?.map_err(|e| format!("{e:?}"))?;
    Ok(format!("status {}", response.status()))
}

#[cfg(not(target_family = "wasm"))]
fn http_get(_url: &str) -> Result<String, String> {
    Err("wasi:http exists only inside a component".into())
}

opal_sdk::export_plugin!(Prober);
