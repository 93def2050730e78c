// The command line (plus config file and environment) into a Config, with
// CLI11. Returns a value: main decides what to print and how to exit.
#pragma once

#include <optional>
#include <string>

#include "mcp_sse_bridge/config.h"

namespace msb {

struct CliResult {
  std::optional<Config> config;  // set when the bridge should run
  int exit_code = 0;             // otherwise: exit with this (0 after --help, 2 on a bad value)
  std::string output;            // and print this: usage (stdout) or one error line (stderr)
  bool to_stderr = false;
};

// Never exits and never prints. Errors are one line, "mcp-sse-bridge: error:
// <flag>: <what is wrong>", naming the flag.
CliResult parse_command_line(int argc, char** argv);

}  // namespace msb
