//! `ipcshim status` and `ipcshim stop`: requests to the namespace's running broker.

use crate::broker::ask;
use crate::cli::{namespace_name, namespace_socket, usage_error, use_socket};
use ipcshim::wire::Op;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const STATUS_HELP: &str = "\
Usage:
 ipcshim status [--socket PATH]

Show the namespace's broker: its pid, the namespace, its objects per family, the processes
connected to it (other than this command), and the memory its objects hold (bytes of the
pages allocated to their memfds). Exit status 1 if no broker runs.

Options:
     --socket PATH  the broker's socket (default: the namespace's)
 -h, --help         display this help";

const STOP_HELP: &str = "\
Usage:
 ipcshim stop [--force] [--socket PATH]

Stop the namespace's broker. Refused (exit status 1) while the namespace holds objects,
unless --force: stopping a broker is a reboot for its namespace, its objects are gone.

Options:
 -f, --force        stop even if objects exist
     --socket PATH  the broker's socket (default: the namespace's)
 -h, --help         display this help";

/// Parses `--socket`, `--help` and, if `force` is given, `--force`; None: exit with the code.
fn parse(cmd: &str, help: &str, args: Vec<OsString>, mut force: Option<&mut bool>) -> Result<PathBuf, ExitCode> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        match parser.next() {
            Ok(None) => break,
            Ok(Some(Long("socket"))) => match parser.value() {
                Ok(v) => use_socket(v),
                Err(e) => return Err(usage_error(cmd, e)),
            },
            Ok(Some(Short('f') | Long("force"))) if force.is_some() => **force.as_mut().unwrap() = true,
            Ok(Some(Short('h') | Long("help"))) => {
                println!("{help}");
                return Err(ExitCode::SUCCESS);
            }
            Ok(Some(arg)) => return Err(usage_error(cmd, arg.unexpected())),
            Err(e) => return Err(usage_error(cmd, e)),
        }
    }
    Ok(std::env::var_os("IPCSHIM_SOCKET").map(PathBuf::from).unwrap_or_else(namespace_socket))
}

pub fn status(args: Vec<OsString>) -> ExitCode {
    let socket = match parse("status", STATUS_HELP, args, None) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match ask(&socket, &[Op::Status as i64]) {
        Ok(w) if w.len() >= 9 => {
            // Our own request's connection is one process and one connection: not counted.
            println!("namespace:   {}", namespace_name(&socket));
            println!("socket:      {}", socket.display());
            println!("broker pid:  {}", w[1]);
            println!("objects:     {} ({} message queues, {} semaphore arrays, {} shared memory segments)", w[2], w[5], w[6], w[7]);
            println!("processes:   {}", (w[3] - 1).max(0));
            println!("connections: {}", (w[4] - 1).max(0));
            println!("memory:      {} bytes", w[8]);
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("ipcshim status: short reply (a broker of another version?)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ipcshim status: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn stop(args: Vec<OsString>) -> ExitCode {
    let mut force = false;
    let socket = match parse("stop", STOP_HELP, args, Some(&mut force)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match ask(&socket, &[Op::Stop as i64, force as i64]) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.contains("busy") => {
            eprintln!("ipcshim stop: the namespace still holds objects; remove them or use 'ipcshim stop --force'");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ipcshim stop: {e}");
            ExitCode::from(1)
        }
    }
}
