//! quern-labeling (being written).
