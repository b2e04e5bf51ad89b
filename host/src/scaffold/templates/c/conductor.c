/* {{name}}: a tinytown `conductor` policy, in C (wit-bindgen c; world agent).
 *
 * Whatever message wakes it, it hands backlog tasks (oldest first) to idle workers (role
 * `worker`, no unfinished task, in name order), one task per worker.
 * config: none (it accepts any table).
 *
 * handle *returns* actions; the host applies them atomically. host answers read-only questions.
 */
{{prelude}}
/* ---- the role ---- */

bool exports_agent_init(agent_list_tuple2_string_string_t *config, agent_error_t *err) {
  (void)err;
  agent_list_tuple2_string_string_free(config);
  return true;
}

static int by_name(const void *a, const void *b) {
  str_t x = ((const tinytown_agent_host_agent_info_t *)a)->name;
  str_t y = ((const tinytown_agent_host_agent_info_t *)b)->name;
  int c = memcmp(x.ptr, y.ptr, x.len < y.len ? x.len : y.len);
  return c ? c : (x.len > y.len) - (x.len < y.len);
}

bool exports_agent_handle(agent_message_t *msg, agent_list_action_t *ret, agent_error_t *err) {
  (void)err;
  *ret = (agent_list_action_t){NULL, 0};
  str_t role = {(uint8_t *)"worker", 6}; /* borrowed by the import */
  tinytown_agent_host_list_agent_info_t agents;
  tinytown_agent_host_list_agents(&role, &agents);
  /* The idle workers to the front, then in name order. */
  size_t idle = 0;
  for (size_t i = 0; i < agents.len; i++) {
    tinytown_agent_host_agent_info_t w = agents.ptr[i];
    if (w.active_tasks == 0 && (eq(w.state, "idle") || eq(w.state, "working"))) {
      agents.ptr[i] = agents.ptr[idle];
      agents.ptr[idle++] = w;
    }
  }
  qsort(agents.ptr, idle, sizeof *agents.ptr, by_name);
  tinytown_agent_host_list_task_info_t tasks;
  tinytown_agent_host_backlog(&tasks);
  for (size_t i = 0; i < idle && i < tasks.len; i++) {
    str_t worker = agents.ptr[i].name, task_id = tasks.ptr[i].id;
    push(ret, TINYTOWN_AGENT_TYPES_ACTION_ASSIGN)->val.assign = (tinytown_agent_types_assignment_t){
        .agent = copy(worker),
        .task_id = {true, copy(task_id)},
        .description = copy(tasks.ptr[i].description),
    };
    str_t line = from_c("assigned ");
    add_s(&line, task_id);
    add_c(&line, " to ");
    add_s(&line, worker);
    push_log(ret, TINYTOWN_AGENT_TYPES_LOG_LEVEL_INFO, line);
  }
  tinytown_agent_host_list_agent_info_free(&agents);
  tinytown_agent_host_list_task_info_free(&tasks);
  agent_message_free(msg);
  return true;
}
