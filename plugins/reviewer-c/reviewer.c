/* tinytown reviewer role, in C (wit-bindgen `c`; world tinytown:agent/agent-exec).
 *
 * On a `review-request` it runs the configured check program (via the `exec` capability) with
 * the request body on stdin, and returns approve/reject for the task, optionally an `info`
 * note to the `notify` agent, and an escalation when the check cannot run at all.
 * Same semantics and texts as the Rust reviewer (a conformance suite compares them).
 *
 * config: program (required), args (whitespace-separated, `{task}` -> task id),
 *         notify (agent name), timeout-ms (integer, passed to exec).
 *
 * Ownership (wit-bindgen C): exported functions own and free their arguments; returned
 * strings and lists are malloc'd and freed by the generated post-return functions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_exec.h"

typedef agent_exec_string_t str_t;
typedef tinytown_agent_types_action_t action_t;

#define MISSING_PROGRAM "reviewer needs config key `program` (the check to run for a review)"

/* ---- small string helpers (strings are UTF-8, ptr + len, not NUL-terminated) ---- */

/* Whitespace as Rust's str::trim / split_whitespace see it (Unicode White_Space), so that texts
 * match the Rust reviewer byte for byte: the byte length of the whitespace character that
 * starts at p (n bytes left), or 0. */
static size_t ws_at(const uint8_t *p, size_t n) {
  if (n >= 1 && (p[0] == ' ' || (p[0] >= '\t' && p[0] <= '\r'))) return 1;
  if (n >= 2 && p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0)) return 2; /* U+0085, U+00A0 */
  if (n >= 3 && p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) return 3;   /* U+1680 */
  if (n >= 3 && p[0] == 0xE2 && p[1] == 0x80 && /* U+2000-200A, U+2028, U+2029, U+202F */
      ((p[2] >= 0x80 && p[2] <= 0x8A) || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF))
    return 3;
  if (n >= 3 && p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) return 3;   /* U+205F */
  if (n >= 3 && p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) return 3;   /* U+3000 */
  return 0;
}

/* The same for the character that ends at p + n (valid UTF-8: a suffix match is a character). */
static size_t ws_before(const uint8_t *p, size_t n) {
  for (size_t k = 1; k <= 3 && k <= n; k++)
    if (ws_at(p + n - k, k) == k) return k;
  return 0;
}

/* A view of s (no copy) without the whitespace at both ends. */
static str_t trim(str_t s) {
  size_t k;
  while ((k = ws_at(s.ptr, s.len))) s.ptr += k, s.len -= k;
  while ((k = ws_before(s.ptr, s.len))) s.len -= k;
  return s;
}

static bool eq(str_t s, const char *lit) {
  return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* A growable malloc'd buffer that becomes a returned string. */
typedef struct { uint8_t *ptr; size_t len, cap; } buf_t;

static void put(buf_t *b, const void *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->ptr = realloc(b->ptr, b->cap);
    if (!b->ptr) abort();
  }
  memcpy(b->ptr + b->len, p, n);
  b->len += n;
}
static void put_c(buf_t *b, const char *s) { put(b, s, strlen(s)); }
static void put_s(buf_t *b, str_t s) { put(b, s.ptr, s.len); }
static str_t take(buf_t *b) {
  if (b->len == 0) { /* post-return frees only non-empty strings: return {NULL, 0} */
    free(b->ptr);
    return (str_t){NULL, 0};
  }
  return (str_t){b->ptr, b->len};
}

static str_t copy(str_t s) {
  buf_t b = {0};
  put_s(&b, s);
  return take(&b);
}
static str_t lit(const char *s) {
  buf_t b = {0};
  put_c(&b, s);
  return take(&b);
}

/* ---- configuration, set by init ---- */

static struct {
  bool ok;
  str_t program;
  agent_exec_list_string_t args; /* split at whitespace, `{task}` still in place */
  bool has_notify;
  str_t notify;
  agent_exec_option_u32_t timeout_ms;
} cfg;

static bool config_error(agent_exec_error_t *err, str_t message) {
  err->message = message;
  err->retryable = false;
  return false;
}

/* Like the Rust reviewer's `get`: the value of the last pair with this key, trimmed; false
 * when there is none or it is blank. */
static bool get(agent_exec_list_tuple2_string_string_t *config, const char *key, str_t *value) {
  for (size_t i = config->len; i-- > 0;)
    if (eq(config->ptr[i].f0, key)) {
      *value = trim(config->ptr[i].f1);
      return value->len > 0;
    }
  return false;
}

/* Like the Rust reviewer's parse_config: fills cfg, or returns false with *err set. */
static bool parse_config(agent_exec_list_tuple2_string_string_t *config, agent_exec_error_t *err) {
  str_t program, args, notify, timeout;
  if (!get(config, "program", &program)) return config_error(err, lit(MISSING_PROGRAM));

  agent_exec_option_u32_t timeout_ms = {false, 0};
  if (get(config, "timeout-ms", &timeout)) {
    str_t d = timeout; /* like Rust's u32::from_str: an optional '+', then digits */
    if (d.ptr[0] == '+') d.ptr++, d.len--;
    uint64_t v = 0;
    bool valid = d.len > 0;
    for (size_t i = 0; valid && i < d.len; i++) {
      valid = d.ptr[i] >= '0' && d.ptr[i] <= '9';
      v = v * 10 + (uint64_t)(d.ptr[i] - '0');
      if (v > UINT32_MAX) valid = false;
    }
    if (!valid) {
      buf_t b = {0};
      put_c(&b, "reviewer config key `timeout-ms` must be a whole number of milliseconds, got `");
      put_s(&b, timeout);
      put_c(&b, "`");
      return config_error(err, take(&b));
    }
    timeout_ms = (agent_exec_option_u32_t){true, (uint32_t)v};
  }

  cfg.program = copy(program);
  cfg.timeout_ms = timeout_ms;
  cfg.args = (agent_exec_list_string_t){NULL, 0};
  if (get(config, "args", &args)) { /* trimmed, so it starts and ends with an argument */
    cfg.args.ptr = malloc((args.len / 2 + 1) * sizeof(str_t)); /* enough for any split */
    while (args.len) {
      size_t n = 0, k;
      while (n < args.len && !ws_at(args.ptr + n, args.len - n)) n++;
      cfg.args.ptr[cfg.args.len++] = copy((str_t){args.ptr, n});
      args.ptr += n, args.len -= n;
      while ((k = ws_at(args.ptr, args.len))) args.ptr += k, args.len -= k;
    }
  }
  cfg.has_notify = get(config, "notify", &notify);
  if (cfg.has_notify) cfg.notify = copy(notify);
  cfg.ok = true;
  return true;
}

bool exports_agent_exec_init(agent_exec_list_tuple2_string_string_t *config, agent_exec_error_t *err) {
  bool ok = parse_config(config, err);
  agent_exec_list_tuple2_string_string_free(config);
  return ok;
}

/* ---- handle ---- */

/* arg with every `{task}` replaced by the task id. */
static str_t expand(str_t arg, str_t task) {
  buf_t b = {0};
  for (size_t i = 0; i < arg.len;) {
    if (arg.len - i >= 6 && memcmp(arg.ptr + i, "{task}", 6) == 0) {
      put_s(&b, task);
      i += 6;
    } else {
      put(&b, arg.ptr + i, 1);
      i++;
    }
  }
  return take(&b);
}

/* Runs the check. Sets *approved, returns the verdict text; *escalation gets a text (or stays
 * {0}) when the check could not run. */
static str_t review(str_t task, str_t body, bool *approved, str_t *escalation) {
  buf_t text = {0};
  *approved = false;
  if (trim(body).len == 0) {
    put_c(&text, "nothing to review");
    return take(&text);
  }
  tinytown_agent_exec_command_t cmd = {
      .program = cfg.program,
      .args = {malloc((cfg.args.len + 1) * sizeof(str_t)), cfg.args.len},
      .stdin_ = {true, body},
      .timeout_ms = cfg.timeout_ms,
  };
  for (size_t i = 0; i < cfg.args.len; i++) cmd.args.ptr[i] = expand(cfg.args.ptr[i], task);

  tinytown_agent_exec_output_t out;
  str_t run_err;
  if (!tinytown_agent_exec_run(&cmd, &out, &run_err)) {
    put_c(&text, "check could not run: ");
    put_s(&text, run_err);
    str_t self;
    tinytown_agent_host_self_name(&self);
    buf_t esc = {0};
    put_c(&esc, "reviewer ");
    put_s(&esc, self);
    put_c(&esc, " cannot run its check: ");
    put_s(&esc, run_err);
    *escalation = take(&esc);
    agent_exec_string_free(&self);
    agent_exec_string_free(&run_err);
  } else {
    if (out.timed_out) {
      put_c(&text, "check timed out");
    } else if (out.status.is_some && out.status.val == 0) {
      *approved = true;
      put_c(&text, "check passed");
    } else if (out.status.is_some) {
      char num[16];
      snprintf(num, sizeof num, "%d", (int)out.status.val);
      put_c(&text, "check failed (exit ");
      put_c(&text, num);
      put_c(&text, ")");
      str_t detail = trim(out.stderr_).len ? trim(out.stderr_) : trim(out.stdout_);
      if (detail.len) {
        put_c(&text, ": ");
        put_s(&text, detail);
      }
    } else {
      put_c(&text, "check failed (killed by a signal)");
    }
    tinytown_agent_exec_output_free(&out);
  }
  agent_exec_list_string_free(&cmd.args);
  return take(&text);
}

static bool handle(agent_exec_message_t *msg, agent_exec_list_action_t *ret, agent_exec_error_t *err) {
  *ret = (agent_exec_list_action_t){NULL, 0};
  /* A host that skipped `init` gets the error `init` would have given. */
  if (!cfg.ok) return config_error(err, lit(MISSING_PROGRAM));
  if (msg->kind.tag != TINYTOWN_AGENT_TYPES_KIND_REVIEW_REQUEST) return true;
  ret->ptr = calloc(3, sizeof(action_t)); /* verdict, send, escalate at most */
  if (!msg->task_id.is_some) {
    buf_t b = {0};
    put_c(&b, "review request from ");
    put_s(&b, msg->sender);
    put_c(&b, " has no task id");
    ret->ptr[ret->len].tag = TINYTOWN_AGENT_TYPES_ACTION_ESCALATE;
    ret->ptr[ret->len++].val.escalate = take(&b);
    return true;
  }
  str_t task = msg->task_id.val;
  bool approved;
  str_t escalation = {0};
  str_t text = review(task, msg->body, &approved, &escalation);

  action_t *verdict = &ret->ptr[ret->len++];
  verdict->tag = approved ? TINYTOWN_AGENT_TYPES_ACTION_APPROVE : TINYTOWN_AGENT_TYPES_ACTION_REJECT;
  verdict->val.approve = (tinytown_agent_types_task_outcome_t){copy(task), text}; /* same layout as .reject */

  if (cfg.has_notify) {
    buf_t b = {0};
    put_c(&b, approved ? "approved " : "rejected ");
    put_s(&b, task);
    put_c(&b, ": ");
    put_s(&b, text);
    action_t *send = &ret->ptr[ret->len++];
    send->tag = TINYTOWN_AGENT_TYPES_ACTION_SEND;
    send->val.send = (tinytown_agent_types_outgoing_t){
        .to = copy(cfg.notify),
        .kind = {.tag = TINYTOWN_AGENT_TYPES_KIND_INFO},
        .body = take(&b),
        .priority = TINYTOWN_AGENT_TYPES_PRIORITY_NORMAL,
        .task_id = {true, copy(task)},
        .correlation_id = {true, copy(msg->id)},
    };
  }
  if (escalation.len) {
    ret->ptr[ret->len].tag = TINYTOWN_AGENT_TYPES_ACTION_ESCALATE;
    ret->ptr[ret->len++].val.escalate = escalation;
  }
  return true;
}

bool exports_agent_exec_handle(agent_exec_message_t *msg, agent_exec_list_action_t *ret, agent_exec_error_t *err) {
  bool ok = handle(msg, ret, err);
  agent_exec_message_free(msg);
  return ok;
}
