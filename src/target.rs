//! The capture target model shared with GhostWire. (stub: to be implemented)
