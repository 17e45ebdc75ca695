//! The GhostWire discovery client. (stub: to be implemented)
