//! The capture target model shared with GhostWire. (placeholder until the
//! `target` branch lands)

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Target {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub netns: u64,
    pub pid: u32,
    pub starttime: u64,
    pub prefix: String,
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<String>,
    #[serde(rename = "node-name")]
    pub node_name: String,
    pub cluster: Option<Cluster>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Cluster {
    pub uid: String,
}

#[derive(Debug)]
pub struct TargetError(String);

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid container description: {}", self.0)
    }
}

pub fn parse_target(json: &[u8]) -> Result<Target, TargetError> {
    serde_json::from_slice(json).map_err(|e| TargetError(e.to_string()))
}

pub fn process_starttime(_pid: u32) -> Option<u64> {
    None
}

pub fn is_stale(target: &Target, read_starttime: impl Fn(u32) -> Option<u64>) -> bool {
    target.pid != 0 && target.starttime != 0 && read_starttime(target.pid) != Some(target.starttime)
}
