//! Criterion benches of the model runtime: prompt prefill and one cached decode step, on the
//! default model (fp32 and int8; run `cargo xtask setup` first).

use criterion::{Criterion, criterion_group, criterion_main};
use ngsd_runtime::{ForwardOut, Positions};

fn bench_variant(c: &mut Criterion, variant: &str) {
    let dir = ngsd_benches::bench_model_dir(variant);
    let (mut model, tokenizer, template) = match ngsd_benches::load(&dir, 2) {
        Ok(m) => m,
        Err(e) => panic!(
            "cannot load {}: {e:#}; run `cargo xtask setup`",
            dir.display()
        ),
    };
    let prompt =
        ngsd_benches::prompt_ids(&tokenizer, template.as_ref(), ngsd_benches::BENCH_PROMPT)
            .expect("the bench prompt tokenizes");
    let mut out = ForwardOut::default();
    let mut group = c.benchmark_group(format!("smollm2-{variant}"));
    group.sample_size(20);
    group.bench_function(format!("prefill_{}_tokens", prompt.len()), |b| {
        b.iter(|| {
            let mut cache = model.new_cache().expect("cache");
            model
                .forward(&mut cache, &prompt, Positions::Last, &mut out)
                .expect("prefill");
        })
    });
    // One decode step at a context of prompt + 32 tokens; building that cache is not timed.
    group.bench_function("decode_step_after_32_tokens", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let mut cache = model.new_cache().expect("cache");
                model
                    .forward(&mut cache, &prompt, Positions::Last, &mut out)
                    .expect("prefill");
                for _ in 0..32 {
                    model
                        .forward(&mut cache, &[13], Positions::Last, &mut out)
                        .expect("step");
                }
                let start = std::time::Instant::now();
                model
                    .forward(&mut cache, &[13], Positions::Last, &mut out)
                    .expect("step");
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_variant(c, "fp32");
    bench_variant(c, "int8");
}

criterion_group!(runtime, benches);
criterion_main!(runtime);
