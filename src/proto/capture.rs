//! The capture program's arguments: the list API.md fixes, in its order.
//! (Starting the program is `crate::service::spawn`.)

/// The capture program's arguments: `-w - -n -q`, `-p` if chaste, `-f FILTER`
/// if given, then `-i IF` per interface (`any` when none is named). dumpcap
/// binds `-p` and `-f` to the `-i` before them, and options given before
/// every `-i` to all interfaces: after the first `-i` a filter would hold
/// on that interface only. Each value is one argument; no shell is ever
/// involved.
pub fn capture_args(interfaces: &[String], filter: Option<&str>, chaste: bool) -> Vec<String> {
    let mut args: Vec<String> = ["-w", "-", "-n", "-q"].map(String::from).to_vec();
    if chaste {
        args.push("-p".into());
    }
    if let Some(f) = filter {
        args.extend(["-f".into(), f.to_string()]);
    }
    if interfaces.is_empty() {
        args.extend(["-i".into(), "any".into()]);
    }
    for nif in interfaces {
        args.extend(["-i".into(), nif.clone()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn no_interfaces_means_any() {
        assert_eq!(
            capture_args(&[], None, false),
            s(&["-w", "-", "-n", "-q", "-i", "any"])
        );
    }

    #[test]
    fn arguments_come_in_the_documented_order() {
        assert_eq!(
            capture_args(&s(&["eth0", "lo"]), Some("icmp or tcp"), true),
            s(&[
                "-w",
                "-",
                "-n",
                "-q",
                "-p",
                "-f",
                "icmp or tcp",
                "-i",
                "eth0",
                "-i",
                "lo"
            ])
        );
    }

    #[test]
    fn filter_stays_one_argument_whatever_it_contains() {
        let a = capture_args(&[], Some("port 80; rm -rf / $(x)"), false);
        assert_eq!(a[4..6], s(&["-f", "port 80; rm -rf / $(x)"]));
        assert_eq!(a.len(), 8);
    }
}
