//! `packetflix-capture`: capture through a Packetflix service from the command
//! line, list targets, run the demo, or serve Wireshark as an extcap plugin.
//! Everything lives in [`packetflix::client`]; this only hands over the
//! arguments and exits with the status it returns.

fn main() {
    let status = packetflix::client::main_with_args(std::env::args_os().skip(1));
    std::process::exit(status);
}
