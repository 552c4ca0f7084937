/* ngsd_gate.h: the ngsd gate plugin ABI, version 1.1.
 *
 * Generated from crates/ngsd-gate/src/abi.rs by ngsd_gate::abi::c_header(); do not edit.
 * Regenerate: NGSD_UPDATE_HEADER=1 cargo test -p ngsd-gate header_is_fresh
 *
 * A plugin exports ngsd_gate_abi_version() and ngsd_gate_v1(); see plugins/README.md and
 * plugins/gate-c-example/gate_c_example.c.
 */
#ifndef NGSD_GATE_H
#define NGSD_GATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major version: host and plugin must agree exactly. */
#define NGSD_ABI_MAJOR 1u
/** ABI minor version: a plugin's must be at least the host's; bumps only append fields. */
#define NGSD_ABI_MINOR 1u
/** `(ABI_MAJOR << 16) | ABI_MINOR`, the value of `ngsd_gate_abi_version()`. */
#define NGSD_ABI_VERSION 65537u
/** Needs flag: the base model's last hidden state. */
#define NGSD_NEEDS_HIDDEN 1u
/** Needs flag: the base model's next-token distribution. */
#define NGSD_NEEDS_BASE_PROBS 2u
/** Needs flag: the expert's next-token distribution. */
#define NGSD_NEEDS_EXPERT_PROBS 4u
/** Needs flag: the divergence between base and expert distributions. */
#define NGSD_NEEDS_DIVERGENCE 8u
/** Input flag: `divergence` holds a value. */
#define NGSD_HAS_DIVERGENCE 1u
/** Input flag: `risk` holds a value. */
#define NGSD_HAS_RISK 2u
/** Input flag: `alpha` holds a value. */
#define NGSD_HAS_ALPHA 4u
/** Status: success. */
#define NGSD_STATUS_OK 0
/** Status: the gate reported an error; the message is in `last_error`. */
#define NGSD_STATUS_ERROR 1
/** Status: the gate panicked (or crashed in a recoverable way); see `last_error`. */
#define NGSD_STATUS_PANIC 2
/** Status: the host passed a null pointer, bad UTF-8 or a too-small struct. */
#define NGSD_STATUS_INVALID_ARGUMENT 3

/** The result of every fallible ABI call: one of the `STATUS_*` constants. */
typedef int32_t NgsdStatus;

/** An opaque gate instance owned by the plugin; the host only passes it back. */
typedef struct NgsdGateState NgsdGateState;

/** A borrowed UTF-8 string: pointer and length in bytes, no NUL terminator required. */
typedef struct NgsdStrRef {
    /** First byte; may be null when `len` is 0. */
    const char *ptr;
    /** Length in bytes. */
    size_t len;
} NgsdStrRef;

/** What a gate answers for one step. */
typedef struct NgsdDecision {
    /** Steering strength in [0, 1]: 0 leaves the base model alone, 1 steers fully. */
    float strength;
    /** One explanation value for the trace (membrane potential, probability, ...). */
    float value;
} NgsdDecision;

/** What the host knows about the prompt, given once per request before step 0. */
typedef struct NgsdPromptInput {
    /** `sizeof(NgsdPromptInput)` as the host was built; later fields exist only below it. */
    uint32_t size;
    /** `HAS_RISK` / `HAS_ALPHA` bits for the optional scalars below. */
    uint32_t flags;
    /**
     * The prompt features the gate declared, concatenated (by default the final hidden
     * state at the prompt's last token); may be null if `hidden_len` is 0.
     */
    const float *hidden;
    /** Number of floats in `hidden`. */
    size_t hidden_len;
    /** The request's risk from self-reflection, if `flags & HAS_RISK`. */
    float risk;
    /** The steering weight alpha, if `flags & HAS_ALPHA`. */
    float alpha;
} NgsdPromptInput;

/** What the host gives a gate at one generation step. */
typedef struct NgsdStepInput {
    /** `sizeof(NgsdStepInput)` as the host was built; later fields exist only below it. */
    uint32_t size;
    /** `HAS_DIVERGENCE` / `HAS_RISK` / `HAS_ALPHA` bits for the optional scalars below. */
    uint32_t flags;
    /** 0 for the first generated token of the request. */
    uint64_t step;
    /** The base model's last hidden state (may be null if `hidden_len` is 0). */
    const float *hidden;
    /** Number of floats in `hidden`. */
    size_t hidden_len;
    /** The base model's next-token distribution, or null when not computed. */
    const float *base_probs;
    /** Number of floats in `base_probs`. */
    size_t base_probs_len;
    /** The expert's next-token distribution, or null when not computed. */
    const float *expert_probs;
    /** Number of floats in `expert_probs`. */
    size_t expert_probs_len;
    /** Base/expert divergence, if `flags & HAS_DIVERGENCE`. */
    float divergence;
    /** The request's risk from self-reflection, if `flags & HAS_RISK`. */
    float risk;
    /** The steering weight alpha, if `flags & HAS_ALPHA`. */
    float alpha;
} NgsdStepInput;

/** What the host gives a gate that monitors the answer, at each check (ABI 1.1). */
typedef struct NgsdAnswerInput {
    /** `sizeof(NgsdAnswerInput)` as the host was built; later fields exist only below it. */
    uint32_t size;
    /** `HAS_RISK` / `HAS_ALPHA` bits for the optional scalars below. */
    uint32_t flags;
    /** Answer tokens generated so far. */
    uint64_t tokens;
    /**
     * The answer features the gate declared, concatenated (may be null if
     * `features_len` is 0).
     */
    const float *features;
    /** Number of floats in `features`. */
    size_t features_len;
    /** The request's risk from self-reflection, if `flags & HAS_RISK`. */
    float risk;
    /** The steering weight alpha, if `flags & HAS_ALPHA`. */
    float alpha;
} NgsdAnswerInput;

/**
 * The functions of a gate plugin, ABI major version 1. Every entry up to `last_error`
 * must be non-null; the entries after it (ABI 1.1) may be null.
 */
typedef struct NgsdGateVTableV1 {
    /** `sizeof(NgsdGateVTableV1)` as the plugin was built. */
    uint32_t size;
    /** The same value as `ngsd_gate_abi_version()`. */
    uint32_t abi_version;
    /** The gate's name (static string), e.g. "lif". */
    NgsdStrRef (*name)(void);
    /** One line saying what the gate does (static string). */
    NgsdStrRef (*description)(void);
    /** The `NEEDS_*` bits of a default-configured instance (for listings). */
    uint32_t (*default_needs)(void);
    /**
     * Build a gate from its parameter text (`key = value` lines, UTF-8). On success
     * stores the state in `*out_state`. On failure writes up to `error_capacity` bytes
     * of UTF-8 message to `error` and its length to `*error_len`.
     */
    NgsdStatus (*create)(NgsdStrRef config, NgsdGateState **out_state, char *error, size_t error_capacity, size_t *error_len);
    /** Free a state made by `create`. */
    void (*destroy)(NgsdGateState *state);
    /** The `NEEDS_*` bits this instance reads in `decide`; fixed for its life. */
    uint32_t (*needs)(const NgsdGateState *state);
    /** Forget all per-request state. */
    NgsdStatus (*reset)(NgsdGateState *state);
    /** See the prompt, once per request, after `reset` and before step 0. */
    NgsdStatus (*observe_prompt)(NgsdGateState *state, const NgsdPromptInput *input);
    /** Decide one step; writes `*out` on success. Must not allocate on success. */
    NgsdStatus (*decide)(NgsdGateState *state, const NgsdStepInput *input, NgsdDecision *out);
    /** The message of the last failed call on this state, valid until the next call. */
    NgsdStrRef (*last_error)(const NgsdGateState *state);
    /**
     * ABI 1.1: the hidden-state features this instance reads, as `FeatureSpec` text
     * (`prompt = final.last, 22.mean; answer = 22.mean`), valid while the state lives.
     * Null: `prompt = final.last`.
     */
    NgsdStrRef (*features)(const NgsdGateState *state);
    /**
     * ABI 1.1: re-check the answer so far; writes `*out` on success. Called only when
     * the features list answer features. Null: never steers.
     */
    NgsdStatus (*check_answer)(NgsdGateState *state, const NgsdAnswerInput *input, NgsdDecision *out);
} NgsdGateVTableV1;

/** Exported by every plugin, frozen across all versions: `(major << 16) | minor`. */
uint32_t ngsd_gate_abi_version(void);

/** Exported by every plugin of ABI major 1: its static vtable. */
const NgsdGateVTableV1 *ngsd_gate_v1(void);

/* Layout checks: the offsets and sizes the Rust compiler chose (64-bit targets). */
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
#ifdef __cplusplus
#define NGSD_STATIC_ASSERT static_assert
#else
#define NGSD_STATIC_ASSERT _Static_assert
#endif
NGSD_STATIC_ASSERT(offsetof(NgsdStrRef, ptr) == 0, "NgsdStrRef.ptr offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStrRef, len) == 8, "NgsdStrRef.len offset");
NGSD_STATIC_ASSERT(sizeof(NgsdStrRef) == 16, "NgsdStrRef size");
NGSD_STATIC_ASSERT(offsetof(NgsdDecision, strength) == 0, "NgsdDecision.strength offset");
NGSD_STATIC_ASSERT(offsetof(NgsdDecision, value) == 4, "NgsdDecision.value offset");
NGSD_STATIC_ASSERT(sizeof(NgsdDecision) == 8, "NgsdDecision size");
NGSD_STATIC_ASSERT(offsetof(NgsdPromptInput, size) == 0, "NgsdPromptInput.size offset");
NGSD_STATIC_ASSERT(offsetof(NgsdPromptInput, flags) == 4, "NgsdPromptInput.flags offset");
NGSD_STATIC_ASSERT(offsetof(NgsdPromptInput, hidden) == 8, "NgsdPromptInput.hidden offset");
NGSD_STATIC_ASSERT(offsetof(NgsdPromptInput, hidden_len) == 16, "NgsdPromptInput.hidden_len offset");
NGSD_STATIC_ASSERT(offsetof(NgsdPromptInput, risk) == 24, "NgsdPromptInput.risk offset");
NGSD_STATIC_ASSERT(offsetof(NgsdPromptInput, alpha) == 28, "NgsdPromptInput.alpha offset");
NGSD_STATIC_ASSERT(sizeof(NgsdPromptInput) == 32, "NgsdPromptInput size");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, size) == 0, "NgsdStepInput.size offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, flags) == 4, "NgsdStepInput.flags offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, step) == 8, "NgsdStepInput.step offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, hidden) == 16, "NgsdStepInput.hidden offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, hidden_len) == 24, "NgsdStepInput.hidden_len offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, base_probs) == 32, "NgsdStepInput.base_probs offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, base_probs_len) == 40, "NgsdStepInput.base_probs_len offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, expert_probs) == 48, "NgsdStepInput.expert_probs offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, expert_probs_len) == 56, "NgsdStepInput.expert_probs_len offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, divergence) == 64, "NgsdStepInput.divergence offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, risk) == 68, "NgsdStepInput.risk offset");
NGSD_STATIC_ASSERT(offsetof(NgsdStepInput, alpha) == 72, "NgsdStepInput.alpha offset");
NGSD_STATIC_ASSERT(sizeof(NgsdStepInput) == 80, "NgsdStepInput size");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, size) == 0, "NgsdAnswerInput.size offset");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, flags) == 4, "NgsdAnswerInput.flags offset");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, tokens) == 8, "NgsdAnswerInput.tokens offset");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, features) == 16, "NgsdAnswerInput.features offset");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, features_len) == 24, "NgsdAnswerInput.features_len offset");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, risk) == 32, "NgsdAnswerInput.risk offset");
NGSD_STATIC_ASSERT(offsetof(NgsdAnswerInput, alpha) == 36, "NgsdAnswerInput.alpha offset");
NGSD_STATIC_ASSERT(sizeof(NgsdAnswerInput) == 40, "NgsdAnswerInput size");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, size) == 0, "NgsdGateVTableV1.size offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, abi_version) == 4, "NgsdGateVTableV1.abi_version offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, name) == 8, "NgsdGateVTableV1.name offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, description) == 16, "NgsdGateVTableV1.description offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, default_needs) == 24, "NgsdGateVTableV1.default_needs offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, create) == 32, "NgsdGateVTableV1.create offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, destroy) == 40, "NgsdGateVTableV1.destroy offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, needs) == 48, "NgsdGateVTableV1.needs offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, reset) == 56, "NgsdGateVTableV1.reset offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, observe_prompt) == 64, "NgsdGateVTableV1.observe_prompt offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, decide) == 72, "NgsdGateVTableV1.decide offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, last_error) == 80, "NgsdGateVTableV1.last_error offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, features) == 88, "NgsdGateVTableV1.features offset");
NGSD_STATIC_ASSERT(offsetof(NgsdGateVTableV1, check_answer) == 96, "NgsdGateVTableV1.check_answer offset");
NGSD_STATIC_ASSERT(sizeof(NgsdGateVTableV1) == 104, "NgsdGateVTableV1 size");
#undef NGSD_STATIC_ASSERT
#endif

#ifdef __cplusplus
}
#endif

#endif /* NGSD_GATE_H */
