/* {{name}}: a tinytown `worker` role, in C (wit-bindgen c; world agent-exec).
 *
 * On a task-assign it runs config `program` with the task text on stdin, then asks config
 * `reviewer` to review the output. On a verdict reject it runs again with the feedback appended.
 * config: program (required), reviewer (required), args (whitespace-separated), timeout-ms.
 *
 * handle *returns* actions; the host applies them atomically. exec is the one import that acts.
 */
{{prelude}}
{{run_config}}
/* ---- the role ---- */

static str_t reviewer; /* config `reviewer` */

bool exports_agent_exec_init(config_t *config, agent_exec_error_t *err) {
  str_t v;
  bool ok = parse_run_config(config, "worker", err);
  if (ok && !get(config, "reviewer", &v)) ok = fatal(err, from_c("worker needs config key `reviewer`"));
  if (ok) reviewer = copy(v);
  run_cfg.ok = ok;
  agent_exec_list_tuple2_string_string_free(config);
  return ok;
}

/* Runs the program for the task and asks for a review of its output, whatever its exit status
 * (the reviewer judges). When the program cannot run at all: fail the task and escalate. */
static void run_and_request_review(agent_exec_list_action_t *ret, str_t task_id, str_t stdin_text) {
  tinytown_agent_exec_output_t out;
  str_t error;
  if (!run(stdin_text, &out, &error)) {
    str_t me;
    tinytown_agent_host_self_name(&me);
    str_t text = from_c("worker ");
    add_s(&text, me);
    add_c(&text, " could not run `");
    add_s(&text, run_cfg.program);
    add_c(&text, "`: ");
    add_s(&text, error);
    str_t escalation = copy(text);
    add_c(&escalation, " (task ");
    add_s(&escalation, task_id);
    add_c(&escalation, ")");
    push(ret, TINYTOWN_AGENT_TYPES_ACTION_FAIL)->val.fail = (tinytown_agent_types_task_outcome_t){copy(task_id), text};
    push(ret, TINYTOWN_AGENT_TYPES_ACTION_ESCALATE)->val.escalate = escalation;
    agent_exec_string_free(&me);
    agent_exec_string_free(&error);
    return;
  }
  char status[16] = "signal";
  if (out.timed_out) snprintf(status, sizeof status, "timed out");
  else if (out.status.is_some) snprintf(status, sizeof status, "%d", (int)out.status.val);
  str_t body = from_c("exit ");
  add_c(&body, status);
  add_c(&body, "\n");
  add_s(&body, out.stdout_);
  push(ret, TINYTOWN_AGENT_TYPES_ACTION_REQUEST_REVIEW)->val.request_review =
      (tinytown_agent_types_review_request_t){copy(reviewer), copy(task_id), body};
  tinytown_agent_exec_output_free(&out);
}

bool exports_agent_exec_handle(agent_exec_message_t *msg, agent_exec_list_action_t *ret, agent_exec_error_t *err) {
  *ret = (agent_exec_list_action_t){NULL, 0};
  bool ok = run_cfg.ok || fatal(err, from_c("worker is not configured: init failed"));
  uint8_t kind = msg->kind.tag;
  if (ok && (kind == TINYTOWN_AGENT_TYPES_KIND_TASK_ASSIGN || kind == TINYTOWN_AGENT_TYPES_KIND_VERDICT)) {
    str_t task_id = msg->task_id.val;
    if (!msg->task_id.is_some) {
      str_t text = from_c("message ");
      add_s(&text, msg->id);
      add_c(&text, " has no task id; ignored");
      push_log(ret, TINYTOWN_AGENT_TYPES_LOG_LEVEL_WARN, text);
    } else if (kind == TINYTOWN_AGENT_TYPES_KIND_TASK_ASSIGN) {
      run_and_request_review(ret, task_id, msg->body);
    } else if (msg->kind.val.verdict.tag == TINYTOWN_AGENT_TYPES_VERDICT_APPROVE) {
      str_t text = from_c("task ");
      add_s(&text, task_id);
      add_c(&text, " approved");
      push_log(ret, TINYTOWN_AGENT_TYPES_LOG_LEVEL_INFO, text);
    } else {
      tinytown_agent_host_task_info_t task;
      if (tinytown_agent_host_get_task(&task_id, &task)) {
        str_t input = copy(task.description);
        add_c(&input, "\n\nReviewer feedback:\n");
        add_s(&input, msg->kind.val.verdict.val.reject);
        run_and_request_review(ret, task_id, input);
        free(input.ptr);
        tinytown_agent_host_task_info_free(&task);
      } else {
        str_t text = from_c("rejected task ");
        add_s(&text, task_id);
        add_c(&text, " is unknown");
        push_log(ret, TINYTOWN_AGENT_TYPES_LOG_LEVEL_WARN, text);
      }
    }
  }
  agent_exec_message_free(msg);
  return ok;
}
