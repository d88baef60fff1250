//! Compiles the C part (src/ipc/thread_words.c), and generates the C header from the Rust
//! source with cbindgen, into OUT_DIR; the checked-in copy is include/ipcshim.h (`make
//! header` refreshes it, a test fails when it is stale).

fn main() {
    // This thread's words in initial-exec TLS (src/ipc/thread.rs).
    println!("cargo:rerun-if-changed=src/ipc/thread_words.c");
    cc::Build::new().file("src/ipc/thread_words.c").flag("-ftls-model=initial-exec").compile("ipcshim_thread_words");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("ipcshim.h");
    println!("cargo:rerun-if-changed=src/abi");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(b) => {
            b.write_to_file(&out);
            // The header test (src/abi/mod.rs) compares this with include/ipcshim.h.
            println!("cargo:rustc-env=IPCSHIM_GENERATED_HEADER={}", out.display());
        }
        Err(e) => panic!("cbindgen: {e}"),
    }
}
