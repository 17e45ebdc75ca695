//! The desktop side of the client, as text: where Wireshark says its extcap
//! folders are, the desktop entry that handles `packetflix:` links, the
//! record of what `install` made (kept in that entry, so `uninstall` removes
//! exactly that), `mimeapps.list` edits, and the Wireshark command line a
//! link becomes.
//!
//! No I/O here ([`super::install`] runs the programs and touches the files).
//! A link comes from any web page: it is checked to be a `packetflix:` link
//! the client can read, and it only ever travels as one argument, never
//! through a shell.

use std::path::{Path, PathBuf};

use super::extcap::EXTCAP_INTERFACE;
use super::url::ServiceUrl;

/// The desktop entry's file name (its desktop file ID).
pub const DESKTOP_FILE: &str = "packetflix-capture.desktop";
/// The MIME type desktops give links of the `packetflix:` scheme.
pub const SCHEME_MIME: &str = "x-scheme-handler/packetflix";
/// The link scheme the discovery UI writes.
const SCHEME: &str = "packetflix:";
/// The program name in the extcap folder.
pub const EXTCAP_FILE: &str = "packetflix-capture";
/// The group of `mimeapps.list` that names default handlers
/// (freedesktop.org's MIME Applications Associations specification).
const DEFAULTS_GROUP: &str = "[Default Applications]";
/// Keys of the desktop entry that record what `install` made.
const KEY_EXTCAP: &str = "X-Packetflix-Extcap";
const KEY_MADE: &str = "X-Packetflix-Made";
const KEY_PREVIOUS: &str = "X-Packetflix-Previous-Default";
const KEY_MIMEAPPS: &str = "X-Packetflix-Mimeapps";
/// Longest link accepted: far above a multi-target link of GhostWire's, far
/// below what would make an argument list unwieldy.
const MAX_LINK: usize = 64 * 1024;

/// The extcap folders Wireshark reports (`tshark -G folders`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folders {
    /// The personal extcap folder.
    pub personal: Option<PathBuf>,
    /// The global (system) extcap folders, in search order.
    pub global: Vec<PathBuf>,
}

/// Reads `tshark -G folders`. Wireshark 4.2 and later name the personal
/// extcap folder ("Personal Extcap path") and the global one ("Global Extcap
/// path"); 4.0 names only "Extcap path" (global) and looks for personal
/// plugins in the `extcap` folder of its "Personal configuration".
pub fn parse_folders(text: &str) -> Folders {
    let mut f = Folders::default();
    let mut config = None;
    for line in text.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match label.trim() {
            "Personal Extcap path" => f.personal = Some(PathBuf::from(value)),
            "Global Extcap path" | "Extcap path" => f.global.push(PathBuf::from(value)),
            "Personal configuration" => config = Some(PathBuf::from(value).join("extcap")),
            _ => {}
        }
    }
    if f.personal.is_none() {
        f.personal = config;
    }
    f
}

/// What `install` made, as recorded in the entry it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The plugin it put into the extcap folder.
    pub extcap: Option<PathBuf>,
    /// Folders and files it created (besides the entry and the plugin).
    pub made: Vec<PathBuf>,
    /// The `mimeapps.list` in which it made the entry the default.
    pub mimeapps: Option<PathBuf>,
    /// The handler that was the default before, to restore.
    pub previous_default: Option<String>,
}

impl Record {
    /// Adds `path` to what was made, once.
    pub fn made(&mut self, path: &Path) {
        if !self.made.iter().any(|p| p == path) {
            self.made.push(path.to_path_buf());
        }
    }
}

/// The desktop entry: `exec` is the plugin's path, run as `… open %u`.
/// Refuses paths a desktop entry cannot carry (not UTF-8, line breaks, `;`
/// in a recorded path).
pub fn entry(exec: &Path, record: &Record) -> Result<String, String> {
    let exec = exec_arg(exec)?;
    let mut e = format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Version=1.4\n\
         Name=Packetflix capture link\n\
         GenericName=Packet capture link handler\n\
         Comment=Opens packetflix: capture links in Wireshark, capturing through the Packetflix extcap plugin\n\
         Exec={exec} open %u\n\
         MimeType={SCHEME_MIME};\n\
         NoDisplay=true\n\
         Terminal=false\n\
         Categories=Network;\n"
    );
    let mut paths = Vec::new();
    if let Some(x) = &record.extcap {
        e.push_str(&format!("{KEY_EXTCAP}={}\n", value(x)?));
    }
    for p in &record.made {
        paths.push(value(p)?);
    }
    if !paths.is_empty() {
        e.push_str(&format!("{KEY_MADE}={};\n", paths.join(";")));
    }
    if let Some(m) = &record.mimeapps {
        e.push_str(&format!("{KEY_MIMEAPPS}={}\n", value(m)?));
    }
    if let Some(prev) = &record.previous_default {
        // A list of handlers: `;` is its separator, not the record's.
        if prev.contains(['\n', '\r', '\\']) {
            return Err(format!(
                "the previous handlers {prev:?} cannot be recorded (line break or '\\' in them)"
            ));
        }
        e.push_str(&format!("{KEY_PREVIOUS}={prev}\n"));
    }
    Ok(e)
}

/// The record in an entry `install` wrote; `None` if it is not one of ours.
pub fn read_record(entry: &str) -> Option<Record> {
    let mut ours = false;
    let mut r = Record::default();
    for line in entry.lines() {
        let Some((key, val)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "MimeType" if val.split(';').any(|m| m == SCHEME_MIME) => ours = true,
            KEY_EXTCAP => r.extcap = Some(PathBuf::from(val)),
            KEY_MADE => {
                r.made = val
                    .split(';')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }
            KEY_MIMEAPPS => r.mimeapps = Some(PathBuf::from(val)),
            KEY_PREVIOUS => r.previous_default = Some(val.to_string()),
            _ => {}
        }
    }
    ours.then_some(r)
}

/// A path as a recorded value: UTF-8, no line break, no `;` (the list
/// separator), no backslash (an escape in desktop entries).
fn value(p: &Path) -> Result<String, String> {
    match p.to_str() {
        Some(s) if !s.contains(['\n', '\r', ';', '\\']) => Ok(s.to_string()),
        _ => Err(format!(
            "{}: a desktop entry cannot record this path (line break, ';' or '\\' in it, or not UTF-8)",
            p.display()
        )),
    }
}

/// The program path as the Exec key's first word: plain if it needs no
/// quoting, else quoted as the Desktop Entry Specification says (reserved
/// characters inside double quotes, `"`, `` ` ``, `$` and `\` escaped, and
/// each backslash doubled once more for the string value).
fn exec_arg(p: &Path) -> Result<String, String> {
    let s = value(p)?;
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
    {
        return Ok(s);
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '`' | '$') {
            q.push_str("\\\\");
        }
        q.push(c);
    }
    q.push('"');
    Ok(q)
}

/// `mimeapps.list` with `handler` (one, or a `;`-separated list as
/// written) as the default of `mime` (the entry replaced if there is one,
/// the group added if missing).
pub fn set_default(text: &str, mime: &str, handler: &str) -> String {
    let line = format!("{mime}={handler}");
    let mut out = Vec::new();
    let mut in_defaults = false;
    let mut done = false;
    for l in text.lines() {
        if l.starts_with('[') {
            if in_defaults && !done {
                out.push(line.clone());
                done = true;
            }
            in_defaults = l.trim() == DEFAULTS_GROUP;
        } else if in_defaults && key_of(l) == Some(mime) {
            if !done {
                out.push(line.clone());
                done = true;
            }
            continue;
        }
        out.push(l.to_string());
    }
    if in_defaults && !done {
        out.push(line.clone());
        done = true;
    }
    if !done {
        if out.last().is_some_and(|l| !l.is_empty()) {
            out.push(String::new());
        }
        out.push(DEFAULTS_GROUP.to_string());
        out.push(line);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// `mimeapps.list` without `handler` as a default of `mime` (other handlers
/// listed for it stay, in order).
pub fn remove_default(text: &str, mime: &str, handler: &str) -> String {
    let mut out = Vec::new();
    let mut in_defaults = false;
    for l in text.lines() {
        if l.starts_with('[') {
            in_defaults = l.trim() == DEFAULTS_GROUP;
        } else if in_defaults && key_of(l) == Some(mime) {
            let (_, handlers) = l.split_once('=').unwrap_or((l, ""));
            let rest: Vec<&str> = handlers
                .split(';')
                .filter(|h| !h.is_empty() && h.trim() != handler)
                .collect();
            if !rest.is_empty() {
                out.push(format!("{mime}={};", rest.join(";")));
            }
            continue;
        }
        out.push(l.to_string());
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// The first handler `mimeapps.list` names as the default of `mime`.
pub fn default_in(text: &str, mime: &str) -> Option<String> {
    first_handler(&handlers_in(text, mime)?).map(str::to_string)
}

/// The handlers `mimeapps.list` lists as the defaults of `mime`, as
/// written (`a.desktop;b.desktop;`).
pub fn handlers_in(text: &str, mime: &str) -> Option<String> {
    let mut in_defaults = false;
    for l in text.lines() {
        if l.starts_with('[') {
            in_defaults = l.trim() == DEFAULTS_GROUP;
        } else if in_defaults && key_of(l) == Some(mime) {
            let (_, handlers) = l.split_once('=')?;
            return Some(handlers.trim().to_string());
        }
    }
    None
}

/// The first handler of a `;`-separated list.
pub fn first_handler(handlers: &str) -> Option<&str> {
    handlers.split(';').map(str::trim).find(|h| !h.is_empty())
}

/// True if a `mimeapps.list` says nothing any more: only group headers,
/// comments and blank lines.
pub fn says_nothing(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l.starts_with('[')
    })
}

fn key_of(line: &str) -> Option<&str> {
    line.split_once('=').map(|(k, _)| k.trim())
}

/// Checks a link handed to the desktop entry: a `packetflix:` link of a
/// size and form the client reads. Returns it as given.
pub fn check_link(link: &str) -> Result<&str, String> {
    if link.len() > MAX_LINK {
        return Err(format!("the link is longer than {MAX_LINK} bytes"));
    }
    if link.chars().any(char::is_control) {
        return Err("the link holds control characters".into());
    }
    if !link
        .get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
    {
        return Err(format!(
            "not a packetflix: link: {}",
            link.chars().take(80).collect::<String>()
        ));
    }
    // The scheme's own letters in any case; the client reads it lower case.
    let link_lower = format!("{SCHEME}{}", &link[SCHEME.len()..]);
    ServiceUrl::parse(&link_lower)?;
    Ok(link)
}

/// Wireshark's arguments for a link: capture at once (`-k`) on the plugin's
/// interface with the link as its Service URL. When the link names the
/// target, the target, interface, filter and promiscuity preferences a
/// user saved are set empty for this start, so the link alone says what to
/// capture (command-line options win over the URL in the plugin); access
/// (token file, CA, `--insecure`) and the discovery URL still come from the
/// saved preferences.
pub fn wireshark_args(link: &str) -> Result<Vec<String>, String> {
    let link = check_link(link)?;
    let normalized = format!("{SCHEME}{}", &link[SCHEME.len()..]);
    let names_target = ServiceUrl::parse(&normalized)?.params.target.is_some();
    let pref = |name: &str, value: &str| {
        [
            "-o".to_string(),
            format!("extcap.{EXTCAP_INTERFACE}.{name}:{value}"),
        ]
    };
    let mut args = vec!["-k".to_string(), "-i".to_string(), EXTCAP_INTERFACE.into()];
    args.extend(pref("url", &normalized));
    if names_target {
        for name in ["target", "targets", "prefix", "nif", "filter"] {
            args.extend(pref(name, ""));
        }
        args.extend(pref("chaste", "false"));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLDERS_4_0: &str = "Temp:                \t/tmp\n\
        Personal configuration:\t/home/u/.config/wireshark\n\
        Global configuration:\t/usr/share/wireshark\n\
        Personal Plugins:    \t/home/u/.local/lib/wireshark/plugins/4.0\n\
        Extcap path:         \t/usr/lib/x86_64-linux-gnu/wireshark/extcap\n\
        MaxMind database path:\t/usr/share/GeoIP\n";
    const FOLDERS_4_2: &str = "Temp:                \t/tmp\n\
        Personal configuration:\t/home/u/.config/wireshark\n\
        Personal Extcap path:\t/home/u/.local/lib/wireshark/extcap\n\
        Global Extcap path:  \t/usr/lib/x86_64-linux-gnu/wireshark/extcap\n";

    #[test]
    fn wireshark_4_0_keeps_personal_plugins_in_its_configuration_folder() {
        let f = parse_folders(FOLDERS_4_0);
        assert_eq!(
            f.personal,
            Some(PathBuf::from("/home/u/.config/wireshark/extcap"))
        );
        assert_eq!(
            f.global,
            [PathBuf::from("/usr/lib/x86_64-linux-gnu/wireshark/extcap")]
        );
    }

    #[test]
    fn wireshark_4_2_names_its_personal_extcap_folder() {
        let f = parse_folders(FOLDERS_4_2);
        assert_eq!(
            f.personal,
            Some(PathBuf::from("/home/u/.local/lib/wireshark/extcap"))
        );
        assert_eq!(f.global.len(), 1);
        assert_eq!(parse_folders("nonsense\n"), Folders::default());
    }

    #[test]
    fn the_entry_runs_the_plugin_on_the_link_and_records_what_install_made() {
        let record = Record {
            extcap: Some("/h/.config/wireshark/extcap/packetflix-capture".into()),
            made: vec![
                "/h/.config/wireshark".into(),
                "/h/.config/mimeapps.list".into(),
            ],
            mimeapps: Some("/h/.config/mimeapps.list".into()),
            previous_default: Some("other.desktop;second.desktop;".into()),
        };
        let text = entry(
            Path::new("/h/.config/wireshark/extcap/packetflix-capture"),
            &record,
        )
        .unwrap();
        assert!(text.starts_with("[Desktop Entry]\n"));
        assert!(text.contains("\nExec=/h/.config/wireshark/extcap/packetflix-capture open %u\n"));
        assert!(text.contains("\nMimeType=x-scheme-handler/packetflix;\n"));
        assert_eq!(read_record(&text), Some(record));
        assert_eq!(read_record("[Desktop Entry]\nName=x\n"), None, "not ours");
    }

    /// The Debian package ships the same entry `install --system` would
    /// write for /usr/bin (without a record: dpkg keeps that).
    #[test]
    fn the_packaged_entry_is_the_one_install_writes() {
        let shipped = include_str!("../../deploy/debian/packetflix-capture.desktop");
        assert_eq!(
            shipped,
            entry(Path::new("/usr/bin/packetflix-capture"), &Record::default()).unwrap()
        );
    }

    #[test]
    fn odd_program_paths_are_quoted_and_unrecordable_ones_refused() {
        let text = entry(Path::new("/home/a b/$x/pc"), &Record::default()).unwrap();
        assert!(
            text.contains("\nExec=\"/home/a b/\\\\$x/pc\" open %u\n"),
            "{text}"
        );
        for bad in ["/a\nb", "/a;b", "/a\\b"] {
            let r = Record {
                made: vec![bad.into()],
                ..Record::default()
            };
            assert!(entry(Path::new("/x"), &r).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_set_replaced_and_removed_leaving_the_rest() {
        let empty = set_default("", SCHEME_MIME, "a.desktop");
        assert_eq!(
            empty,
            "[Default Applications]\nx-scheme-handler/packetflix=a.desktop\n"
        );
        let mine = "[Added Associations]\ntext/plain=ed.desktop;\n\n[Default Applications]\n\
                    x-scheme-handler/packetflix=old.desktop\ntext/html=b.desktop\n";
        let set = set_default(mine, SCHEME_MIME, DESKTOP_FILE);
        assert_eq!(default_in(&set, SCHEME_MIME).as_deref(), Some(DESKTOP_FILE));
        assert!(set.contains("text/plain=ed.desktop;") && set.contains("text/html=b.desktop"));
        assert_eq!(set.matches("x-scheme-handler/packetflix").count(), 1);
        let removed = remove_default(&set, SCHEME_MIME, DESKTOP_FILE);
        assert_eq!(default_in(&removed, SCHEME_MIME), None);
        assert!(removed.contains("text/html=b.desktop"));
        let only_ours = remove_default(&empty, SCHEME_MIME, "a.desktop");
        assert!(says_nothing(&only_ours), "{only_ours:?}");
        assert!(!says_nothing(&removed));
        // Another handler listed beside ours stays.
        let two = "[Default Applications]\nx-scheme-handler/packetflix=a.desktop;b.desktop;\n";
        assert_eq!(
            default_in(&remove_default(two, SCHEME_MIME, "a.desktop"), SCHEME_MIME).as_deref(),
            Some("b.desktop")
        );
        // A line of several handlers comes back as it was written.
        let listed = "[Default Applications]\nx-scheme-handler/packetflix=a.desktop;b.desktop;\n";
        let prev = handlers_in(listed, SCHEME_MIME).unwrap();
        assert_eq!(first_handler(&prev), Some("a.desktop"));
        let ours = set_default(listed, SCHEME_MIME, DESKTOP_FILE);
        assert_eq!(set_default(&ours, SCHEME_MIME, &prev), listed);
        // A group after the defaults gets the line before it.
        let before = "[Default Applications]\ntext/html=b.desktop\n[Other]\nk=v\n";
        let set = set_default(before, SCHEME_MIME, "a.desktop");
        assert!(
            set.contains("x-scheme-handler/packetflix=a.desktop\n[Other]"),
            "{set}"
        );
    }

    #[test]
    fn every_link_form_of_the_discovery_ui_becomes_one_url_argument() {
        for link in [
            "packetflix:ws://h:5001/capture?netns=4026531840&nif=lo",
            "packetflix:wss://h:5001/capture?container=%7B%22netns%22%3A1%7D&nif=eth0/lo",
            "packetflix://h:5001/capture?container=%7B%22netns%22%3A1%7D&nif=eth0/lo&chaste",
            "PacketFlix:ws://h:5001/capture?netns=1",
        ] {
            let args = wireshark_args(link).unwrap();
            assert_eq!(&args[..3], ["-k", "-i", "packetflix"]);
            let url = format!("extcap.packetflix.url:packetflix:{}", &link[11..]);
            assert_eq!(args[4], url);
            // The link names a target: saved target choices are set aside.
            assert!(args.contains(&"extcap.packetflix.target:".to_string()));
            assert!(args.contains(&"extcap.packetflix.chaste:false".to_string()));
            assert!(args
                .iter()
                .all(|a| !a.contains("token") && !a.contains(".ca:")));
        }
        let bare = wireshark_args("packetflix://h:5001").unwrap();
        assert_eq!(bare.len(), 5, "no target in the link: saved choices stay");
    }

    #[test]
    fn links_that_are_not_packetflix_links_are_refused() {
        for bad in [
            "http://h:5001/capture?netns=1",
            "packetflix:ftp://h/",
            "packetflix://h:5001/capture?netns=1\n-o x",
            "packetflix://h:99999/",
            "",
            "packetflix",
        ] {
            assert!(wireshark_args(bad).is_err(), "{bad:?}");
        }
        let long = format!("packetflix://h/capture?filter={}", "a".repeat(MAX_LINK));
        assert!(check_link(&long).is_err());
    }
}
