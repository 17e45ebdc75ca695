//! The protocol wing: decisions about bytes, with no I/O. Nothing here
//! opens, reads or writes a descriptor, starts a process or touches a file;
//! `the_protocol_wing_does_no_io` below keeps it so.

pub mod auth;
pub mod bpf;
pub mod capture;
pub mod discovery;
pub mod exchange;
pub mod front;
pub mod http;
pub mod http1;
pub mod links;
pub mod linktype;
pub mod logtext;
pub mod merge;
pub mod multi;
pub mod params;
pub mod pcapng;
pub mod pcapng_write;
pub mod proxy;
pub mod selfexcl;
pub mod session;
pub mod target;
pub mod throttle;
pub mod ws;

#[cfg(test)]
mod tests {
    /// What would mean I/O: the event loop, system calls, sockets,
    /// processes, files, threads; and the wings above this one.
    const FORBIDDEN: [&str; 10] = [
        "mio::",
        "nix::",
        "libc::",
        "std::net",
        "std::process",
        "std::fs",
        "std::os::",
        "std::thread",
        "crate::service",
        "crate::client",
    ];

    /// The first name after `metrics::` in `line` that is not a type: the
    /// wing reports what it counts as data (`session::Count`, whose labels
    /// are `crate::metrics`' enums), never touches a process-wide counter
    /// or calls the metrics module itself.
    fn metrics_global(line: &str) -> Option<String> {
        let is_type = |name: &str| {
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().any(|c| c.is_ascii_lowercase())
        };
        for (at, _) in line.match_indices("metrics::") {
            let rest = &line[at + "metrics::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(list) => list
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|n| n.split_whitespace().next().unwrap_or(""))
                    .collect(),
                None => vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")],
            };
            if let Some(bad) = names.into_iter().find(|n| !n.is_empty() && !is_type(n)) {
                return Some(bad.to_string());
            }
        }
        None
    }

    #[test]
    fn metrics_globals_are_told_from_types() {
        assert_eq!(
            metrics_global("use crate::metrics::{End, Lookup as L};"),
            None
        );
        assert_eq!(metrics_global("Count::Ended(metrics::End::Shutdown)"), None);
        assert_eq!(
            metrics_global("crate::metrics::refused(r)").as_deref(),
            Some("refused")
        );
        assert_eq!(
            metrics_global("metrics::BYTES_RELAYED.add(1)").as_deref(),
            Some("BYTES_RELAYED")
        );
        assert_eq!(
            metrics_global("use crate::metrics::{End, render};").as_deref(),
            Some("render")
        );
    }

    #[test]
    fn the_protocol_wing_does_no_io() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto");
        let mut files = vec![dir];
        let mut checked = 0;
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            // Not code of the wing: a module's test file (`mod tests;`
            // under `#[cfg(test)]`).
            if p.extension().is_none_or(|e| e != "rs") || p.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // A module's own tests may use the OS (tshark, say).
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or("");
                if let Some(g) = metrics_global(line) {
                    panic!(
                        "{}:{}: the protocol wing touches the metrics global {g}: {line}",
                        p.display(),
                        n + 1
                    );
                }
                for f in FORBIDDEN {
                    assert!(
                        !line.contains(f),
                        "{}:{}: the protocol wing uses {f}: {line}",
                        p.display(),
                        n + 1
                    );
                }
            }
            checked += 1;
        }
        assert!(checked > 15, "only {checked} files checked");
    }
}
