/* workers/types.h — the job types compiled in, listed by registry.c (each defined in a
 * workers/types_*.c file). Callers use wk_type_find rather than these. */
#ifndef WK_TYPES_H
#define WK_TYPES_H

#include "workers/registry.h"

/* types_basic.c: for tests and benchmarks */
extern const wk_type_t wk_type_noop;  /* succeeds at once with {} */
extern const wk_type_t wk_type_sleep; /* {"ms":N}: waits, honours cancel */
extern const wk_type_t wk_type_fail;  /* {"times":N,"retryable":B}: fails N attempts */

/* types_ai.c: an OpenAI-compatible chat completion through the model's providers */
extern const wk_type_t wk_type_ai_chat;

#endif
