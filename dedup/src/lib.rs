//! quern-dedup (being written).
