//! The `wgpu-diffusion` command line. Each subcommand lives in its own module under src/cli/.

mod cli;

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            // Bad input is one line: clap's own message, without its usage block. The message can
            // run over lines ("required arguments were not provided:" then one line each), so
            // everything before the first blank line is joined.
            _ => {
                let text = e.render().to_string();
                let message: Vec<&str> =
                    text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
                let line =
                    if message.is_empty() { "error: bad arguments".to_string() } else { message.join(" ") };
                eprintln!("{line} (see --help)");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
