/* gate_c_example.c: an ngsd gate written in C.
 *
 * Steers with strength 1 when the base/expert divergence reaches `threshold`
 * (default 0.5). Build:
 *   cc -shared -fPIC -O2 -I crates/ngsd-gate/include gate_c_example.c -o libgate_c_example.so
 *
 * The rules of the ABI (see ngsd_gate.h): export ngsd_gate_abi_version() and ngsd_gate_v1();
 * never let anything unwind or longjmp out of these functions; report failures with a
 * status and a message from last_error; decide() must not allocate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngsd_gate.h"

/* The opaque state the host passes back on every call. */
struct NgsdGateState {
    float threshold;
    char error[256];
};

static NgsdStrRef str_ref(const char *s) {
    NgsdStrRef r = {s, strlen(s)};
    return r;
}

static NgsdStrRef gate_name(void) { return str_ref("c-example"); }

static NgsdStrRef gate_description(void) {
    return str_ref("example gate written in C: steer when the divergence reaches `threshold`");
}

static uint32_t gate_default_needs(void) { return NGSD_NEEDS_DIVERGENCE; }

/* Copy a message into the host's error buffer (no NUL needed: the length is returned). */
static NgsdStatus fail_create(NgsdStatus status, const char *message, char *error,
                              size_t capacity, size_t *error_len) {
    size_t n = strlen(message);
    if (error == NULL) {
        n = 0;
    } else if (n > capacity) {
        n = capacity;
    }
    if (n > 0) {
        memcpy(error, message, n);
    }
    if (error_len != NULL) {
        *error_len = n;
    }
    return status;
}

/* Parameters are `key = value` lines (or `;`-separated). Only `threshold` is known; the
 * host keys `hidden-size` and `model-sha256` are ignored, anything else is an error. */
static NgsdStatus gate_create(NgsdStrRef config, NgsdGateState **out_state, char *error,
                              size_t error_capacity, size_t *error_len) {
    char message[256];
    float threshold = 0.5f;
    size_t i = 0;
    if (out_state == NULL || (config.ptr == NULL && config.len != 0)) {
        return fail_create(NGSD_STATUS_INVALID_ARGUMENT, "null argument", error,
                           error_capacity, error_len);
    }
    while (i < config.len) {
        char line[256], key[64], value[128];
        const char *p;
        size_t start = i, n;
        while (i < config.len && config.ptr[i] != '\n' && config.ptr[i] != ';') {
            i++;
        }
        n = i - start;
        i++; /* skip the separator */
        if (n >= sizeof line) {
            return fail_create(NGSD_STATUS_ERROR, "gate parameters: line too long", error,
                               error_capacity, error_len);
        }
        memcpy(line, config.ptr + start, n);
        line[n] = '\0';
        for (p = line; *p == ' ' || *p == '\t' || *p == '\r'; p++) {
        }
        if (*p == '\0' || *p == '#') {
            continue;
        }
        if (sscanf(p, "%63[a-z0-9_-] = %127s", key, value) != 2) {
            snprintf(message, sizeof message, "gate parameters: `%.200s` is not `key = value`", p);
            return fail_create(NGSD_STATUS_ERROR, message, error, error_capacity, error_len);
        }
        if (strcmp(key, "threshold") == 0) {
            char *end;
            threshold = strtof(value, &end);
            if (*end != '\0' || !(threshold > 0.0f && threshold <= 1.0f)) {
                snprintf(message, sizeof message,
                         "gate parameter `threshold`: `%s` is not a number in (0, 1]", value);
                return fail_create(NGSD_STATUS_ERROR, message, error, error_capacity,
                                   error_len);
            }
        } else if (strcmp(key, "hidden-size") != 0 && strcmp(key, "model-sha256") != 0) {
            snprintf(message, sizeof message,
                     "unknown gate parameter `%s` (this gate knows: threshold)", key);
            return fail_create(NGSD_STATUS_ERROR, message, error, error_capacity, error_len);
        }
    }
    NgsdGateState *state = calloc(1, sizeof *state);
    if (state == NULL) {
        return fail_create(NGSD_STATUS_ERROR, "out of memory", error, error_capacity,
                           error_len);
    }
    state->threshold = threshold;
    *out_state = state;
    return NGSD_STATUS_OK;
}

static void gate_destroy(NgsdGateState *state) { free(state); }

static uint32_t gate_needs(const NgsdGateState *state) {
    (void)state;
    return NGSD_NEEDS_DIVERGENCE;
}

static NgsdStatus gate_reset(NgsdGateState *state) {
    return state == NULL ? NGSD_STATUS_INVALID_ARGUMENT : NGSD_STATUS_OK;
}

static NgsdStatus gate_observe_prompt(NgsdGateState *state, const NgsdPromptInput *input) {
    (void)input;
    return state == NULL ? NGSD_STATUS_INVALID_ARGUMENT : NGSD_STATUS_OK;
}

static NgsdStatus gate_decide(NgsdGateState *state, const NgsdStepInput *input,
                              NgsdDecision *out) {
    if (state == NULL || input == NULL || out == NULL) {
        return NGSD_STATUS_INVALID_ARGUMENT;
    }
    if (input->size < sizeof(NgsdStepInput)) {
        snprintf(state->error, sizeof state->error, "NgsdStepInput.size is %u, expected %zu",
                 (unsigned)input->size, sizeof(NgsdStepInput));
        return NGSD_STATUS_INVALID_ARGUMENT;
    }
    if (!(input->flags & NGSD_HAS_DIVERGENCE)) {
        snprintf(state->error, sizeof state->error, "gate input missing: divergence");
        return NGSD_STATUS_ERROR;
    }
    out->value = input->divergence;
    out->strength = input->divergence >= state->threshold ? 1.0f : 0.0f;
    return NGSD_STATUS_OK;
}

static NgsdStrRef gate_last_error(const NgsdGateState *state) {
    return state == NULL ? str_ref("null gate state") : str_ref(state->error);
}

static const NgsdGateVTableV1 VTABLE = {
    .size = sizeof(NgsdGateVTableV1),
    .abi_version = NGSD_ABI_VERSION,
    .name = gate_name,
    .description = gate_description,
    .default_needs = gate_default_needs,
    .create = gate_create,
    .destroy = gate_destroy,
    .needs = gate_needs,
    .reset = gate_reset,
    .observe_prompt = gate_observe_prompt,
    .decide = gate_decide,
    .last_error = gate_last_error,
};

uint32_t ngsd_gate_abi_version(void) { return NGSD_ABI_VERSION; }

const NgsdGateVTableV1 *ngsd_gate_v1(void) { return &VTABLE; }
