//! `quern doctor`: the first thing to run when something is off (the arguments are
//! `quern::cmd::doctor::Args`).

use std::process::ExitCode;

pub use quern::cmd::doctor::Args;

/// A dependency's version as Cargo.lock recorded it at build time.
macro_rules! locked {
    ($var:literal) => {
        option_env!($var).unwrap_or("not in this build")
    };
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut report = serde_json::Map::new();
    report.insert("quern".into(), env!("CARGO_PKG_VERSION").into());
    report.insert("arrow".into(), locked!("QUERN_ARROW_VERSION").into());
    report.insert("parquet".into(), locked!("QUERN_PARQUET_VERSION").into());
    report.insert("datafusion".into(), datafusion::DATAFUSION_VERSION.into());
    report.insert(
        "tokenizers".into(),
        locked!("QUERN_TOKENIZERS_VERSION").into(),
    );
    report.insert(
        "cpu_threads".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .into(),
    );
    report.insert("rayon_threads".into(), rayon::current_num_threads().into());
    {
        let info = quern_train::runtime::runtime_info();
        report.insert("libtorch".into(), info.libtorch_version.clone().into());
        report.insert("cuda_available".into(), info.cuda_available.into());
        report.insert("cuda_devices".into(), info.cuda_devices.into());
        report.insert("cudnn_available".into(), info.cudnn_available.into());
        report.insert("torch_threads".into(), info.torch_threads.into());
        let ok = (info.smoke_matmul - 14.0).abs() < 1e-9;
        report.insert(
            "libtorch_smoke_test".into(),
            if ok { "ok" } else { "FAILED" }.into(),
        );
        if !ok {
            anyhow::bail!(
                "libtorch's smoke test computed {} instead of 14",
                info.smoke_matmul
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (k, v) in &report {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            println!("{k:<20} {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
