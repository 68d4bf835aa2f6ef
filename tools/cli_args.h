// The command-line parser of the `openmla` CLI: a tree of commands (`openmla`, `openmla bench`,
// `openmla bench sparse-decode`, ...), each declaring its flags with their defaults and allowed
// values. Everything is checked before a command runs: an unknown flag, a missing or malformed
// value, a value outside its range or choices, or an unknown subcommand is an error naming the
// argument and what is allowed (exit 2). `-h` / `--help` prints the command's flags and defaults
// and exits 0 without running it.
//
// A new subcommand is one function in its own file that declares its flags on a Command and sets
// its run callback, e.g.
//
//   void add_bench_indexer(Command& bench) {
//     Command& c = add_bench_op(bench, "indexer", "lightning indexer scores", run_indexer);
//     c.add_int("heads", 64, "query heads", 1);
//   }
//
// and reads them in the callback with args.get_int("heads").
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace openmla::cli {

/// The parsed flags of the command that runs: every value was checked against its declaration.
class Args {
 public:
  /// A switch was given, or a valued flag was given on the command line.
  bool has(const std::string& name) const;
  /// The value of a string or choice flag (its default when not given).
  std::string get(const std::string& name) const;
  /// The value of an integer flag; `fallback` when not given and it has no declared default.
  int64_t get_int(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;

 private:
  friend class Command;
  const class Command* command_ = nullptr;
  std::map<std::string, std::string> given_;  ///< name -> value ("" for switches)
};

class Command {
 public:
  using Run = std::function<int(const Args&)>;

  Command(std::string name, std::string summary, Command* parent = nullptr);

  /// An integer flag in [min, max]. No default: the callback's get_int(name, fallback) decides,
  /// and `default_text` says what it is in the help.
  Command& add_int(const std::string& name, std::optional<int64_t> default_value,
                   const std::string& help, int64_t min = std::numeric_limits<int64_t>::min(),
                   int64_t max = std::numeric_limits<int64_t>::max(),
                   const std::string& default_text = "");
  /// A flag whose value is one of `choices` ("" default: not given means "none of them").
  Command& add_choice(const std::string& name, const std::string& default_value,
                      const std::vector<std::string>& choices, const std::string& help);
  /// A free-form string flag.
  Command& add_string(const std::string& name, const std::string& default_value,
                      const std::string& help, const std::string& metavar = "S");
  /// A flag without a value.
  Command& add_switch(const std::string& name, const std::string& help);

  /// A subcommand; the returned reference stays valid for the life of this command.
  Command& add_command(const std::string& name, const std::string& summary);
  Command& set_run(Run run);
  /// Text printed at the end of --help (environment variables and the like).
  Command& set_epilog(const std::string& text);

  /// Parses argv[first..] and runs the selected command. Returns its exit code, 0 after --help
  /// (and --version on the root), 2 after a usage error.
  int main(int argc, char** argv, const std::string& version);

 private:
  friend class Args;
  enum class Kind { kInt, kChoice, kString, kSwitch };
  struct Flag {
    Kind kind = Kind::kSwitch;
    std::string help, metavar, default_value, default_text;
    int64_t min = 0, max = 0;
    std::vector<std::string> choices;
  };

  static Flag make_flag(Kind kind, const std::string& help, const std::string& metavar,
                        const std::string& default_value);
  Command& add_flag(const std::string& name, Flag flag);
  /// The declared flag `name` of that kind (any kind: nullopt); aborts if there is none.
  const Flag& flag(const std::string& name, std::optional<Kind> kind) const;
  std::string path() const;
  std::string help() const;
  std::string flag_list() const;
  /// Checks `value` against the flag; the error message when it does not fit, else "".
  std::string check(const std::string& name, const Flag& f, const std::string& value) const;
  int usage_error(const std::string& message) const;

  std::string name_, summary_, epilog_;
  Command* parent_;
  std::vector<std::pair<std::string, Flag>> flags_;  ///< declaration order (help lists them so)
  std::vector<std::unique_ptr<Command>> commands_;
  Run run_;
};

}  // namespace openmla::cli
