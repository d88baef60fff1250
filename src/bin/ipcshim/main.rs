//! The `ipcshim` command: `run` a program under the library, `ls` and `rm` a namespace's
//! objects (as util-linux's ipcs and ipcrm do the kernel's), `status` and `stop` its
//! broker, and `broker` (the library starts it).

mod broker;
mod cli;
mod ls;
mod rm;
mod run;
mod status;
mod text;

use std::process::ExitCode;

const USAGE: &str = "\
Usage:
 ipcshim COMMAND [OPTIONS]

System V IPC (message queues, semaphores, shared memory) in user space.

Commands:
 run [--private | --namespace NAME] [--] CMD [ARG...]
                 run CMD with the library preloaded
 ls [OPTIONS]    list the namespace's objects, like ipcs
 rm [OPTIONS]    remove objects by id or key, like ipcrm
 status          show the namespace's broker: pid, objects, processes, memory
 stop [--force]  stop the broker (refused while objects exist, unless --force)
 broker [--daemon]
                 run the namespace's broker (the library starts one when needed)

'ipcshim COMMAND --help' describes a command's options.

The namespace is IPCSHIM_NAMESPACE (default \"default\"), its broker's socket
$IPCSHIM_DIR/ipcshim/NAME.sock (IPCSHIM_DIR defaults to /tmp); IPCSHIM_SOCKET, or the
option --socket PATH of ls, rm, status, stop and broker, names a socket directly.";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some(cmd) = args.first().and_then(|a| a.to_str()) else {
        eprintln!("ipcshim: no command given; try 'ipcshim --help'");
        return ExitCode::from(2);
    };
    let rest = args[1..].to_vec();
    match cmd {
        "run" => run::main(rest),
        "ls" => ls::main(rest),
        "rm" => rm::main(rest),
        "status" => status::status(rest),
        "stop" => status::stop(rest),
        "broker" => broker::main(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("ipcshim: unknown command '{other}'; try 'ipcshim --help'");
            ExitCode::from(2)
        }
    }
}
