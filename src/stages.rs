//! The stage registry and SQL functions of this binary: every crate's built-ins, registered
//! exactly as a user's own stages would be.

use datafusion::prelude::SessionContext;
use quern_core::stage::{StageFn, Verdict};
use quern_core::StageRegistry;

/// Every stage type this binary knows, by `type` name.
pub fn registry() -> StageRegistry {
    let mut reg = StageRegistry::new();
    reg.register(
        "pass",
        "keeps every document unchanged (for measuring the runner itself)",
        |spec| {
            quern_core::stage::parse_params::<Empty>(spec)?;
            Ok(Box::new(StageFn::new(&spec.name, &[], |_, b| {
                Ok(Verdict::columns(b))
            })))
        },
    );
    // One line per data crate:
    quern_dedup::register_stages(&mut reg);
    quern_filters::register_stages(&mut reg);
    quern_ingest::register_stages(&mut reg);
    quern_labeling::register_stages(&mut reg);
    reg
}

/// Registers every crate's SQL functions on a session.
pub fn register_udfs(ctx: &SessionContext) {
    // One line per data crate:
    quern_dedup::register_udfs(ctx);
    quern_filters::register_udfs(ctx);
    quern_labeling::register_udfs(ctx);
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}
