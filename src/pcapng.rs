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

pub fn target_document(info: &TargetInfo) -> String {
    format!(
        "{TARGET_MARKER}container-name: {:?}\ncontainer-type: {:?}\nnode-name: {:?}\n",
        info.container_name, info.container_type, info.node_name
    )
}

/// Placeholder: passes everything through until the `pcapng` branch lands.
pub struct ShbEditor;

impl ShbEditor {
    pub fn new(_document: String) -> Self {
        ShbEditor
    }
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        std::borrow::Cow::Borrowed(input)
    }
    pub fn is_passthrough(&self) -> bool {
        true
    }
    pub fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
}
