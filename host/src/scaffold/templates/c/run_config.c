/* ---- the program to run, from the config table: program, args, timeout-ms ---- */

typedef {{cworld}}_list_tuple2_string_string_t config_t;

static struct {
  bool ok; /* init succeeded */
  str_t program;
  {{cworld}}_list_string_t args;
  {{cworld}}_option_u32_t timeout_ms;
} run_cfg;

/* The value of the last pair with this key, trimmed (a view); false when absent or blank. */
static bool get(config_t *config, const char *key, str_t *value) {
  for (size_t i = config->len; i-- > 0;)
    if (eq(config->ptr[i].f0, key)) {
      *value = trim(config->ptr[i].f1);
      return value->len > 0;
    }
  return false;
}

/* Reads program (required), args (split at whitespace) and timeout-ms into run_cfg. */
static bool parse_run_config(config_t *config, const char *role, {{cworld}}_error_t *err) {
  str_t v;
  if (!get(config, "program", &v)) {
    str_t m = from_c(role);
    add_c(&m, " needs config key `program`");
    return fatal(err, m);
  }
  run_cfg.program = copy(v);
  if (get(config, "timeout-ms", &v)) {
    uint64_t n = 0;
    for (size_t i = 0; i < v.len && n <= UINT32_MAX; i++)
      n = (v.ptr[i] >= '0' && v.ptr[i] <= '9') ? n * 10 + (v.ptr[i] - '0') : UINT64_MAX;
    if (n > UINT32_MAX) return fatal(err, from_c("config key `timeout-ms` must be a whole number"));
    run_cfg.timeout_ms = ({{cworld}}_option_u32_t){true, (uint32_t)n};
  }
  if (get(config, "args", &v)) {
    run_cfg.args.ptr = calloc(v.len / 2 + 1, sizeof(str_t)); /* enough for any split */
    while (v.len) {
      size_t n = 0;
      while (n < v.len && !is_space(v.ptr[n])) n++;
      run_cfg.args.ptr[run_cfg.args.len++] = copy((str_t){v.ptr, n});
      v = trim((str_t){v.ptr + n, v.len - n});
    }
  }
  return true;
}

/* Runs the program with stdin: true and *out, or false and *error when it could not run. */
static bool run(str_t stdin_text, tinytown_agent_exec_output_t *out, str_t *error) {
  tinytown_agent_exec_command_t cmd = {
      .program = run_cfg.program,
      .args = run_cfg.args,
      .stdin_ = {true, stdin_text},
      .timeout_ms = run_cfg.timeout_ms,
  };
  return tinytown_agent_exec_run(&cmd, out, error);
}
