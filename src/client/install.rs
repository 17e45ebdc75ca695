//! `install`, `uninstall` and `open`: the client as a user's (or every
//! user's) Wireshark plugin and `packetflix:` link handler.
//!
//! `install` asks Wireshark where its extcap folder is (`tshark -G
//! folders`, never a guess), puts the plugin there, writes a desktop entry
//! for `x-scheme-handler/packetflix` and makes it the default handler
//! (`xdg-mime default` for a user; `/etc/xdg/mimeapps.list` with
//! `--system`). What it made is recorded in the entry, so `uninstall`
//! removes exactly that and restores the handler that was the default
//! before. `open LINK` is what the entry runs: it checks the link and
//! becomes Wireshark capturing through the plugin. The text of all this is
//! [`super::desktop`]'s; this module runs the programs and touches the
//! files, and never goes through a shell.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::desktop::{self, Folders, Record, DESKTOP_FILE, EXTCAP_FILE, SCHEME_MIME};

/// The folder of desktop entries every user's desktop reads.
const SYSTEM_APPLICATIONS: &str = "/usr/share/applications";
/// The system-wide defaults a desktop reads after the user's own
/// (`$XDG_CONFIG_DIRS`, whose default is `/etc/xdg`).
const SYSTEM_MIMEAPPS: &str = "/etc/xdg/mimeapps.list";

/// For whom to install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    User,
    System,
}

/// The environment's view of where things go, read once.
struct Places {
    extcap_dir: PathBuf,
    applications: PathBuf,
    /// The `mimeapps.list` install writes the default into.
    mimeapps: PathBuf,
}

fn places(scope: Scope) -> Result<Places, String> {
    let folders = wireshark_folders()?;
    match scope {
        Scope::User => {
            let extcap_dir = folders.personal.ok_or(
                "Wireshark reported no personal extcap folder (tshark -G folders); \
                 is its configuration folder readable?",
            )?;
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let xdg = |var: &str, fallback: &str| -> Result<PathBuf, String> {
                match std::env::var_os(var) {
                    Some(v) if Path::new(&v).is_absolute() => Ok(PathBuf::from(v)),
                    _ => home
                        .as_ref()
                        .map(|h| h.join(fallback))
                        .ok_or(format!("neither {var} nor HOME is set")),
                }
            };
            Ok(Places {
                extcap_dir,
                applications: xdg("XDG_DATA_HOME", ".local/share")?.join("applications"),
                mimeapps: xdg("XDG_CONFIG_HOME", ".config")?.join("mimeapps.list"),
            })
        }
        Scope::System => Ok(Places {
            extcap_dir: folders
                .global
                .into_iter()
                .next()
                .ok_or("Wireshark reported no global extcap folder (tshark -G folders)")?,
            applications: PathBuf::from(SYSTEM_APPLICATIONS),
            mimeapps: PathBuf::from(SYSTEM_MIMEAPPS),
        }),
    }
}

/// Asks tshark where Wireshark keeps its extcap plugins.
fn wireshark_folders() -> Result<Folders, String> {
    let out = Command::new("tshark")
        .args(["-G", "folders"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot ask Wireshark where its extcap folder is: tshark: {e} \
                 (Debian: apt-get install tshark)"
            )
        })?;
    if !out.status.success() {
        return Err(format!("tshark -G folders failed ({})", out.status));
    }
    Ok(desktop::parse_folders(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

/// Runs a helper program to its end; its output, or why it failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn found(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Creates `dir` and its missing parents, recording each one it made.
fn make_dirs(dir: &Path, record: &mut Record) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => record.made(d),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
        }
    }
    Ok(())
}

fn say(what: &str) {
    println!("packetflix-capture: {what}");
}

/// `packetflix-capture install [--system]`.
pub fn install(scope: Scope) -> Result<(), String> {
    if scope == Scope::System && !nix::unistd::geteuid().is_root() {
        return Err("install --system needs root (it writes the system's folders)".into());
    }
    if scope == Scope::User && !found("xdg-mime") {
        return Err(
            "xdg-mime not found: it makes the handler the default (Debian: apt-get install xdg-utils)"
                .into(),
        );
    }
    let p = places(scope)?;
    let entry_path = p.applications.join(DESKTOP_FILE);
    // A second install adds to the first one's record, so uninstall still
    // removes what the first made.
    let mut record = std::fs::read_to_string(&entry_path)
        .ok()
        .and_then(|t| desktop::read_record(&t))
        .unwrap_or_default();
    let me = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("cannot find this program's own file: {e}"))?;

    make_dirs(&p.extcap_dir, &mut record)?;
    let plugin = p.extcap_dir.join(EXTCAP_FILE);
    put_plugin(&me, &plugin, scope)?;
    record.extcap = Some(plugin.clone());

    make_dirs(&p.applications, &mut record)?;
    if let Some(parent) = p.mimeapps.parent() {
        make_dirs(parent, &mut record)?;
    }
    // The handlers the file we change names, as written (xdg-mime's query
    // leaves out one whose entry is missing, and a line may list several:
    // uninstall must put back the line as it was).
    let previous = std::fs::read_to_string(&p.mimeapps)
        .ok()
        .and_then(|t| desktop::handlers_in(&t, SCHEME_MIME))
        .unwrap_or_default();
    if desktop::first_handler(&previous).is_some_and(|h| h != DESKTOP_FILE)
        && record.previous_default.is_none()
    {
        record.previous_default = Some(previous.clone());
    }
    if !p.mimeapps.exists() {
        record.made(&p.mimeapps);
    }
    record.mimeapps = Some(p.mimeapps.clone());
    let text = desktop::entry(&plugin, &record)?;
    write_file(&entry_path, &text, 0o644)?;
    say(&format!(
        "wrote {} (opens packetflix: links in Wireshark)",
        entry_path.display()
    ));

    match scope {
        Scope::User => {
            run("xdg-mime", &["default", DESKTOP_FILE, SCHEME_MIME])?;
            let now = run("xdg-mime", &["query", "default", SCHEME_MIME]).unwrap_or_default();
            if now == DESKTOP_FILE {
                say(&format!(
                    "made it the default handler of packetflix: links (xdg-mime default {DESKTOP_FILE} {SCHEME_MIME})"
                ));
            } else {
                say(&format!(
                    "warning: xdg-mime still names {now:?} as the handler of packetflix: links; \
                     this desktop may keep its defaults elsewhere"
                ));
            }
        }
        Scope::System => {
            let old = std::fs::read_to_string(&p.mimeapps).unwrap_or_default();
            write_file(
                &p.mimeapps,
                &desktop::set_default(&old, SCHEME_MIME, DESKTOP_FILE),
                0o644,
            )?;
            say(&format!(
                "made it every user's default handler of packetflix: links ({})",
                p.mimeapps.display()
            ));
            refresh_desktop_database(&p.applications);
        }
    }
    if let Some(prev) = record
        .previous_default
        .as_deref()
        .and_then(desktop::first_handler)
    {
        say(&format!(
            "(the handler before was {prev}; uninstall makes it the default again)"
        ));
    }
    if !found("wireshark") {
        say("note: wireshark is not installed; links open in it once it is (Debian: apt-get install wireshark)");
    }
    let undo = match scope {
        Scope::User => "packetflix-capture uninstall",
        Scope::System => "packetflix-capture uninstall --system",
    };
    say(&format!("undo all of this with: {undo}"));
    Ok(())
}

/// The plugin: a symbolic link to this program for a user (it follows a
/// rebuilt or upgraded binary), a copy for the system (every user must be
/// able to run it, wherever this one lives).
fn put_plugin(me: &Path, plugin: &Path, scope: Scope) -> Result<(), String> {
    if me == plugin {
        say(&format!("{} is already the plugin", plugin.display()));
        return Ok(());
    }
    match scope {
        Scope::User => {
            if std::fs::read_link(plugin).is_ok_and(|t| t == me) {
                say(&format!(
                    "{} already links to {}",
                    plugin.display(),
                    me.display()
                ));
                return Ok(());
            }
            remove_if_there(plugin)?;
            std::os::unix::fs::symlink(me, plugin)
                .map_err(|e| format!("cannot link {}: {e}", plugin.display()))?;
            say(&format!(
                "linked {} -> {} (Wireshark's personal extcap folder)",
                plugin.display(),
                me.display()
            ));
        }
        Scope::System => {
            let bytes =
                std::fs::read(me).map_err(|e| format!("cannot read {}: {e}", me.display()))?;
            if std::fs::read(plugin).is_ok_and(|b| b == bytes) {
                say(&format!("{} is already this program", plugin.display()));
                return Ok(());
            }
            remove_if_there(plugin)?;
            let tmp = plugin.with_extension("new");
            std::fs::write(&tmp, &bytes)
                .and_then(|()| {
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                })
                .and_then(|()| std::fs::rename(&tmp, plugin))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    format!("cannot copy the plugin to {}: {e}", plugin.display())
                })?;
            say(&format!(
                "copied the plugin to {} (Wireshark's global extcap folder)",
                plugin.display()
            ));
        }
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            say(&format!("replaced {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot replace {}: {e}", path.display())),
    }
}

/// Writes through a temporary file and a rename, so a reader never sees
/// half a file.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".packetflix-new");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
}

/// Rebuilds the system's handler cache (mimeinfo.cache), if the tool is
/// there; desktops without it read the defaults file alone.
fn refresh_desktop_database(applications: &Path) {
    if found("update-desktop-database") {
        if let Err(e) = run(
            "update-desktop-database",
            &[&applications.to_string_lossy()],
        ) {
            say(&format!("warning: {e}"));
        }
    }
}

/// `packetflix-capture uninstall [--system]`.
pub fn uninstall(scope: Scope) -> Result<(), String> {
    if scope == Scope::System && !nix::unistd::geteuid().is_root() {
        return Err("uninstall --system needs root".into());
    }
    let applications = match scope {
        Scope::User => places_applications_user()?,
        Scope::System => PathBuf::from(SYSTEM_APPLICATIONS),
    };
    let entry_path = applications.join(DESKTOP_FILE);
    let text = match std::fs::read_to_string(&entry_path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            say(&format!(
                "nothing to uninstall: {} does not exist",
                entry_path.display()
            ));
            return Ok(());
        }
        Err(e) => return Err(format!("cannot read {}: {e}", entry_path.display())),
    };
    let record = desktop::read_record(&text).ok_or(format!(
        "{} is not an entry install wrote; left alone",
        entry_path.display()
    ))?;

    if let Some(plugin) = &record.extcap {
        match std::fs::remove_file(plugin) {
            Ok(()) => say(&format!("removed {}", plugin.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", plugin.display())),
        }
    }
    if let Some(mimeapps) = &record.mimeapps {
        if let Ok(old) = std::fs::read_to_string(mimeapps) {
            let ours = desktop::default_in(&old, SCHEME_MIME).as_deref() == Some(DESKTOP_FILE);
            let new = match &record.previous_default {
                // The earlier handler takes our line's place, where it was.
                Some(prev) if ours => {
                    let first = desktop::first_handler(prev).unwrap_or(prev);
                    say(&format!("{first} handles packetflix: links again"));
                    desktop::set_default(&old, SCHEME_MIME, prev)
                }
                _ => desktop::remove_default(&old, SCHEME_MIME, DESKTOP_FILE),
            };
            let made = record.made.iter().any(|m| m == mimeapps);
            if made && desktop::says_nothing(&new) {
                std::fs::remove_file(mimeapps)
                    .map_err(|e| format!("cannot remove {}: {e}", mimeapps.display()))?;
                say(&format!("removed {}", mimeapps.display()));
            } else if new != old {
                write_file(mimeapps, &new, 0o644)?;
                say(&format!(
                    "removed the packetflix: default from {}",
                    mimeapps.display()
                ));
            }
        }
    }
    std::fs::remove_file(&entry_path)
        .map_err(|e| format!("cannot remove {}: {e}", entry_path.display()))?;
    say(&format!("removed {}", entry_path.display()));
    // Folders install made, deepest first, and only if nothing else is in
    // them now.
    let mut dirs: Vec<&PathBuf> = record.made.iter().filter(|p| p.is_dir()).collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in dirs {
        if std::fs::remove_dir(d).is_ok() {
            say(&format!("removed {}", d.display()));
        }
    }
    if scope == Scope::System {
        refresh_desktop_database(&applications);
    }
    Ok(())
}

fn places_applications_user() -> Result<PathBuf, String> {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(v) if Path::new(&v).is_absolute() => Ok(PathBuf::from(v).join("applications")),
        _ => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/share/applications"))
            .ok_or("neither XDG_DATA_HOME nor HOME is set".into()),
    }
}

/// `packetflix-capture open LINK`: becomes Wireshark capturing the link
/// through the plugin. Returns only if Wireshark could not be started.
pub fn open(link: &str) -> Result<(), String> {
    let args = desktop::wireshark_args(link)?;
    let e = Command::new("wireshark")
        .args(args.iter().map(OsStr::new))
        .exec();
    Err(format!(
        "cannot start wireshark: {e} (Debian: apt-get install wireshark)"
    ))
}
