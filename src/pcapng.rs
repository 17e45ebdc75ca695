//! Editing the first Section Header Block (SHB) of a pcapng stream, sans-IO.
//! (stub: to be implemented)

/// The exact marker clients search for to find (and replace) our document.
pub const TARGET_MARKER: &str = "---\n# capture target information\n";

/// What the YAML document says about the capture target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetInfo<'a> {
    pub container_name: &'a str,
    pub container_type: &'a str,
    pub node_name: &'a str,
    pub cluster_uid: Option<&'a str>,
    pub capture_filter: Option<&'a str>,
    pub no_promiscuous: bool,
}
