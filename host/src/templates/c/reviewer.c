/* {{name}}: a tinytown `reviewer` role, in C (wit-bindgen c; world agent-exec).
 *
 * On a review-request it runs config `program` with the work on stdin and approves only on
 * exit 0. It fails closed: any other outcome rejects (with the check's output as feedback), and
 * a check that cannot run or a request without a task id is escalated. It never approves by
 * default.
 * config: program (required), args (whitespace-separated), timeout-ms.
 *
 * handle *returns* actions; the host applies them atomically. exec is the one import that acts.
 */
{{prelude}}
{{run_config}}
/* ---- the role ---- */

bool exports_agent_exec_init(config_t *config, agent_exec_error_t *err) {
  run_cfg.ok = parse_run_config(config, "reviewer", err);
  agent_exec_list_tuple2_string_string_free(config);
  return run_cfg.ok;
}

/* Runs the check on body: returns whether it passed, sets *text (and *escalation when the
 * check could not run). Only a clean exit 0 approves. */
static bool review(str_t body, str_t *text, str_t *escalation) {
  if (trim(body).len == 0) {
    *text = from_c("nothing to review");
    return false;
  }
  tinytown_agent_exec_output_t out;
  str_t error;
  if (!run(body, &out, &error)) {
    *text = from_c("check could not run: ");
    add_s(text, error);
    str_t me;
    tinytown_agent_host_self_name(&me);
    *escalation = from_c("reviewer ");
    add_s(escalation, me);
    add_c(escalation, " cannot run its check: ");
    add_s(escalation, error);
    agent_exec_string_free(&me);
    agent_exec_string_free(&error);
    return false;
  }
  bool passed = !out.timed_out && out.status.is_some && out.status.val == 0;
  if (out.timed_out) {
    *text = from_c("check timed out");
  } else if (passed) {
    *text = from_c("check passed");
  } else if (!out.status.is_some) {
    *text = from_c("check failed (killed by a signal)");
  } else {
    char num[16];
    snprintf(num, sizeof num, "%d", (int)out.status.val);
    *text = from_c("check failed (exit ");
    add_c(text, num);
    add_c(text, ")");
    str_t detail = trim(out.stderr_).len ? trim(out.stderr_) : trim(out.stdout_);
    if (detail.len) {
      add_c(text, ": ");
      add_s(text, detail);
    }
  }
  tinytown_agent_exec_output_free(&out);
  return passed;
}

bool exports_agent_exec_handle(agent_exec_message_t *msg, agent_exec_list_action_t *ret, agent_exec_error_t *err) {
  *ret = (agent_exec_list_action_t){NULL, 0};
  bool ok = run_cfg.ok || fatal(err, from_c("reviewer is not configured: init failed"));
  if (ok && msg->kind.tag == TINYTOWN_AGENT_TYPES_KIND_REVIEW_REQUEST) {
    if (!msg->task_id.is_some) {
      str_t text = from_c("review request from ");
      add_s(&text, msg->sender);
      add_c(&text, " has no task id");
      push(ret, TINYTOWN_AGENT_TYPES_ACTION_ESCALATE)->val.escalate = text;
    } else {
      str_t text = {0}, escalation = {0};
      bool passed = review(msg->body, &text, &escalation);
      action_t *verdict = push(ret, passed ? TINYTOWN_AGENT_TYPES_ACTION_APPROVE : TINYTOWN_AGENT_TYPES_ACTION_REJECT);
      /* .approve and .reject are the same type at the same place */
      verdict->val.approve = (tinytown_agent_types_task_outcome_t){copy(msg->task_id.val), text};
      if (escalation.len) push(ret, TINYTOWN_AGENT_TYPES_ACTION_ESCALATE)->val.escalate = escalation;
    }
  }
  agent_exec_message_free(msg);
  return ok;
}
