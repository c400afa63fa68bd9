//! Readers (placeholder; being written).
