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
            // Bad input is one line: clap's own error line, without its usage block.
            _ => {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("error: bad arguments");
                eprintln!("{first} (see --help)");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
