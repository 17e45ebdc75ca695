//! The protocol wing: decisions about bytes, with no I/O. Nothing here
//! opens, reads or writes a descriptor, starts a process or touches a file;
//! `the_protocol_wing_does_no_io` below keeps it so.

pub mod auth;
pub mod bpf;
pub mod capture;
pub mod discovery;
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
pub mod ws;

#[cfg(test)]
mod tests {
    /// What would mean I/O: the event loop, system calls, sockets,
    /// processes, files, threads.
    const FORBIDDEN: [&str; 9] = [
        "mio::",
        "nix::",
        "libc::",
        "std::net",
        "std::process",
        "std::fs",
        "std::os::",
        "std::thread",
        "crate::service",
    ];

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
