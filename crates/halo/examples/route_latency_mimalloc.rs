//! [`route_latency`](../route_latency.rs) on mimalloc, the global allocator of the
//! `genesis` and `genesis-server` binaries, so allocation costs match what users run:
//!
//! ```text
//! cargo run --release -p genesis-halo --example route_latency_mimalloc -- [ULTRATOOL_DIR]
//! HALO_ONLY="16 agents route_all(1000) uncached" HALO_ITERS=1 \
//!   valgrind --tool=callgrind --toggle-collect=route_latency_mimalloc::inner::measured \
//!   target/release/examples/route_latency_mimalloc
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "route_latency.rs"]
mod inner;

fn main() -> anyhow::Result<()> {
    inner::main()
}
