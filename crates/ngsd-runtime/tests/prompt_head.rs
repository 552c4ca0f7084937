//! `Model::prefill_prompt` keeps the last prompt head (markup, system prompt, earlier turns)
//! and copies its rows into the next prompt with the same head: the prompt's cache and outputs
//! then match a prefill of the whole prompt, on the Optimum (fp32) and the fused (q4) graph.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use ngsd_runtime::{
    ChatTemplate, Conversation, EncodedPrompt, ForwardOut, KvCache, Message, Model, Positions,
    Prefill, PromptPrefill, Tokenizer, sampling::argmax,
};

fn encode(tok: &Tokenizer, template: &ChatTemplate, system: &str, user: &str) -> EncodedPrompt {
    Conversation {
        system: Some(system),
        history: &[],
        user,
        raw: false,
    }
    .encode(tok, Some(template))
    .unwrap()
}

/// 8 greedy tokens after what `cache` holds, the first from `out`'s last logits.
fn greedy(model: &mut Model, cache: &mut KvCache, out: &mut ForwardOut) -> Vec<u32> {
    let mut tokens = Vec::new();
    for _ in 0..8 {
        let next = argmax(out.last_logits(model.vocab_size()));
        tokens.push(next);
        model.forward(cache, &[next], Positions::Last, out).unwrap();
    }
    tokens
}

/// `prompt` through `prefill_prompt`, and its greedy continuation for 8 steps.
fn via_head(model: &mut Model, prompt: &EncodedPrompt) -> (usize, Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut out = ForwardOut::default();
    let PromptPrefill {
        mut cache,
        fed,
        reused,
    } = model
        .prefill_prompt(
            &prompt.ids,
            prompt.request.start,
            Positions::AllHidden,
            &mut out,
            &mut || false,
        )
        .unwrap();
    assert!(matches!(fed, Prefill::Done));
    assert_eq!(cache.len(), prompt.ids.len());
    let hidden = model.hidden_size();
    assert_eq!(
        out.hidden_rows,
        prompt.ids.len() - reused,
        "the rows of the positions that ran"
    );
    let logits = out.last_logits(model.vocab_size()).to_vec();
    let last_hidden = out.last_hidden(hidden).to_vec();
    let tokens = greedy(model, &mut cache, &mut out);
    (reused, logits, last_hidden, tokens)
}

/// The same prompt prefilled whole into a fresh cache, with no head kept.
fn whole(model: &mut Model, prompt: &EncodedPrompt) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model
        .forward(&mut cache, &prompt.ids, Positions::AllHidden, &mut out)
        .unwrap();
    let logits = out.last_logits(model.vocab_size()).to_vec();
    let last_hidden = out.last_hidden(model.hidden_size()).to_vec();
    let tokens = greedy(model, &mut cache, &mut out);
    (logits, last_hidden, tokens)
}

fn check(mut model: Model, tolerance: f32) {
    let package = model.package().clone();
    let tok = Tokenizer::from_package(&package).unwrap();
    let template = ChatTemplate::from_package(&package).unwrap().unwrap();
    let sys = "You answer briefly.";
    let prompts = [
        (sys, "Name a colour.", false),
        (sys, "What is two plus two?", true),
        (sys, "Name a colour.", true),
        ("You answer in French.", "Name a colour.", false),
        ("You answer in French.", "What is two plus two?", true),
    ];
    for (system, user, reuses) in prompts {
        let prompt = encode(&tok, &template, system, user);
        let (reused, logits, hidden, tokens) = via_head(&mut model, &prompt);
        assert_eq!(reused > 0, reuses, "{system} / {user}");
        if reuses {
            assert_eq!(reused, prompt.request.start);
        }
        model.forget_head();
        let (want_logits, want_hidden, want_tokens) = whole(&mut model, &prompt);
        let d = common::max_diff(&logits, &want_logits);
        let dh = common::max_diff(&hidden, &want_hidden);
        eprintln!("{system} / {user}: reused {reused}, |Δ logits| {d}, |Δ hidden| {dh}");
        assert!(d <= tolerance, "{user}: |Δ logits| = {d}");
        assert_eq!(tokens, want_tokens, "{user}: greedy continuation");
        // Put the head back as it was before `forget_head`.
        via_head(&mut model, &prompt);
    }
}

#[test]
fn a_kept_head_gives_the_whole_prompts_outputs_fp32() {
    check(common::load().0, 1e-3);
}

#[test]
fn a_kept_head_gives_the_whole_prompts_outputs_q4() {
    check(common::load_dir(&common::q4_dir()), 1e-2);
}

/// A head is never reused when it is empty or the whole prompt, and a prefill cut short by
/// `should_stop` keeps no head.
#[test]
fn only_a_whole_head_before_more_tokens_is_kept() {
    let (mut model, tok, template) = common::load();
    let prompt = encode(
        &tok,
        &template,
        "Be kind.",
        "Tell me about owls and their habits.",
    );
    let head = prompt.request.start;
    let mut out = ForwardOut::default();
    let run = |model: &mut Model, head: usize, stop: bool, out: &mut ForwardOut| {
        model
            .prefill_prompt(&prompt.ids, head, Positions::Last, out, &mut || stop)
            .unwrap()
    };
    model.set_prefill_chunk(4);
    let cut = run(&mut model, head, true, &mut out);
    assert!(matches!(cut.fed, Prefill::Stopped { fed: 4 }));
    assert_eq!(
        run(&mut model, head, false, &mut out).reused,
        0,
        "nothing kept after a cut"
    );
    assert_eq!(run(&mut model, head, false, &mut out).reused, head);
    for other in [0, prompt.ids.len()] {
        model.forget_head();
        run(&mut model, other, false, &mut out);
        assert_eq!(
            run(&mut model, other, false, &mut out).reused,
            0,
            "head {other}"
        );
    }
}

/// A conversation whose head goes on from the kept one (same system prompt, earlier turns)
/// reuses the kept rows and runs its turns; the kept head stays the shorter, shared one.
#[test]
fn a_conversation_reuses_the_head_it_starts_with() {
    let (mut model, tok, template) = common::load();
    let sys = "You answer briefly.";
    let single = encode(&tok, &template, sys, "Name a colour.");
    let (first, ..) = via_head(&mut model, &single);
    assert_eq!(first, 0);
    let history = [
        Message::new("user", "Name a colour."),
        Message::new("assistant", "Blue."),
    ];
    let chat = Conversation {
        system: Some(sys),
        history: &history,
        user: "And another one?",
        raw: false,
    }
    .encode(&tok, Some(&template))
    .unwrap();
    assert!(chat.request.start > single.request.start);
    let (reused, logits, hidden, tokens) = via_head(&mut model, &chat);
    assert_eq!(
        reused, single.request.start,
        "the system head, not the whole history"
    );
    model.forget_head();
    let (want_logits, want_hidden, want_tokens) = whole(&mut model, &chat);
    assert!(common::max_diff(&logits, &want_logits) <= 1e-3);
    assert!(common::max_diff(&hidden, &want_hidden) <= 1e-3);
    assert_eq!(tokens, want_tokens);
    // After a miss the conversation's head is kept; a single-turn prompt misses it and puts the
    // shared head back, and the conversation's next turn reuses that again.
    via_head(&mut model, &chat);
    assert_eq!(via_head(&mut model, &single).0, 0);
    assert_eq!(via_head(&mut model, &chat).0, single.request.start);
}
