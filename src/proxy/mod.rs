//! The smart-routing proxy (arrives with its own issue).
