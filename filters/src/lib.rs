//! quern-filters (being written).
