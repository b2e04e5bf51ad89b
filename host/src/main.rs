use clap::Parser;

use tinytown::cli::{self, Cli};
use tinytown::store::error::user_error;

// musl's string functions replaced (a glibc build keeps its own, tested here all the same).
#[cfg(all(target_arch = "x86_64", any(target_env = "musl", test)))]
mod mem;

/// jemalloc, not glibc's malloc. A host serving thousands of agents frees and allocates
/// buffers of every size (mailbox reads, applier calls, instances); glibc spent over a third of
/// a busy 10,000-agent host's CPU in its free-list upkeep (`_int_malloc`, `unlink_chunk`,
/// `malloc_consolidate`), and that memory traffic also slowed Redis on the other core. With
/// jemalloc the host's CPU per message there halved at the same peak RSS (`tt bench scale`,
/// README "Big towns").
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    if cli.command.is_short_lived() {
        // `tt list | head` should end quietly, as other CLI tools do. Long-running commands keep
        // Rust's default (SIGPIPE ignored) so a closed socket is an error they handle.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A command that ends at once runs on this thread: starting the worker threads was about
    // 1 ms of a `tt send`'s 5. Work that blocks still goes to tokio's blocking pool.
    let mut builder = if cli.command.is_short_lived() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(cli::run(cli)) {
        match user_error(&err) {
            Some(u) => {
                eprintln!("error: {}", u.message);
                if let Some(h) = &u.hint {
                    eprintln!("hint: {h}");
                }
                std::process::exit(if u.usage { 2 } else { 1 });
            }
            None => {
                eprintln!("error: {err:#}");
                std::process::exit(1);
            }
        }
    }
}
