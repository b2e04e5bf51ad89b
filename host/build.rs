//! Links `tt` as a position-dependent executable on Linux (`-no-pie`).
//!
//! Every `tt send` is a new process, and a position-independent `tt` (rustc's default) starts
//! by applying ~60,000 relocations to its read-only data: the loader writes to ~240 pages
//! (~1 MB), each a copy-on-write fault. On the 2-core VM this was measured on, a `tt --version`
//! took 2.97 ms of CPU and 527 page faults as a PIE and 1.67 ms and 280 faults without, and
//! `tt send` 5.34 ms against 4.50 (medians of 160, alternating; README "Big towns"). The cost
//! is the executable's own address being fixed: its libraries, heap, stacks and the guests'
//! memory are still placed at random. Build with `TT_PIE=1` to keep the default.
//!
//! This is for a glibc build. The musl build `tt` ships as on x86_64 Linux is static, and
//! `relocation-model=static` in `.cargo/config.toml` fixes it in place.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TT_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux && gnu && std::env::var_os("TT_PIE").is_none() {
        println!("cargo:rustc-link-arg-bin=tt=-no-pie");
    }
}
