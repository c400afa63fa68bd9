//! quern-tokenize (being written).
