//! The side-by-side benchmark driver: `quern label train` without the rest of the quern
//! binary (no DataFusion, no libtorch), so `benches/labeling/run.sh` builds it in release
//! quickly. Same library code as the CLI ([`run_train_job`]).
//!
//! `label_train DATA TEST OUT EPOCHS LR DIM NGRAMS THREADS` prints a JSON [`TrainReport`].

use quern_labeling::classifier::{run_train_job, TrainJob, TrainOptions};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 8 {
        eprintln!("usage: label_train DATA TEST OUT EPOCHS LR DIM NGRAMS THREADS");
        std::process::exit(2);
    }
    let num = |i: usize| -> f64 {
        a[i].parse()
            .unwrap_or_else(|_| panic!("argument {} (`{}`) is not a number", i + 1, a[i]))
    };
    let options = TrainOptions::default()
        .with_epochs(num(3) as u32)
        .with_lr(num(4) as f32)
        .with_dim(num(5) as usize)
        .with_word_ngrams(num(6) as u32)
        .with_threads(num(7) as usize);
    let job = TrainJob {
        data: a[0].clone().into(),
        label_field: "label".into(),
        text_field: "text".into(),
        out: a[2].clone().into(),
        options,
        valid_frac: 0.0,
        test: Some(a[1].clone().into()),
    };
    match run_train_job(&job) {
        Ok(r) => println!("{}", serde_json::to_string_pretty(&r).unwrap()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
