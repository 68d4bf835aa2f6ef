#include "cli_args.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace openmla::cli {
namespace {

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

bool parse_int(const std::string& text, int64_t* value) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *value = v;
  return true;
}

std::string range_text(int64_t min, int64_t max) {
  const bool has_min = min != std::numeric_limits<int64_t>::min();
  const bool has_max = max != std::numeric_limits<int64_t>::max();
  if (has_min && has_max) return " in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  if (has_min) return " >= " + std::to_string(min);
  if (has_max) return " <= " + std::to_string(max);
  return "";
}

}  // namespace

bool Args::has(const std::string& name) const {
  command_->flag(name, std::nullopt);  // checks that the name was declared
  return given_.count(name) > 0;
}

std::string Args::get(const std::string& name) const {
  const Command::Flag& f = command_->flag(name, Command::Kind::kString);
  const auto it = given_.find(name);
  return it == given_.end() ? f.default_value : it->second;
}

int64_t Args::get_int(const std::string& name) const {
  const Command::Flag& f = command_->flag(name, Command::Kind::kInt);
  if (given_.count(name) == 0 && f.default_value.empty()) {
    std::fprintf(stderr, "openmla: internal error: --%s has no default\n", name.c_str());
    std::abort();
  }
  return get_int(name, 0);
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
  const Command::Flag& f = command_->flag(name, Command::Kind::kInt);
  const auto it = given_.find(name);
  const std::string& text = it == given_.end() ? f.default_value : it->second;
  int64_t v = fallback;
  if (!text.empty()) parse_int(text, &v);  // checked when parsed
  return v;
}

Command::Command(std::string name, std::string summary, Command* parent)
    : name_(std::move(name)), summary_(std::move(summary)), parent_(parent) {}

Command::Flag Command::make_flag(Kind kind, const std::string& help, const std::string& metavar,
                                 const std::string& default_value) {
  Flag f;
  f.kind = kind;
  f.help = help;
  f.metavar = metavar;
  f.default_value = default_value;
  f.default_text = default_value;
  return f;
}

Command& Command::add_flag(const std::string& name, Flag flag) {
  flags_.emplace_back(name, std::move(flag));
  return *this;
}

Command& Command::add_int(const std::string& name, std::optional<int64_t> default_value,
                          const std::string& help, int64_t min, int64_t max,
                          const std::string& default_text) {
  Flag f = make_flag(Kind::kInt, help, "N", default_value ? std::to_string(*default_value) : "");
  if (!default_text.empty()) f.default_text = default_text;
  f.min = min;
  f.max = max;
  return add_flag(name, std::move(f));
}

Command& Command::add_choice(const std::string& name, const std::string& default_value,
                             const std::vector<std::string>& choices, const std::string& help) {
  Flag f = make_flag(Kind::kChoice, help, join(choices, "|"), default_value);
  f.choices = choices;
  return add_flag(name, std::move(f));
}

Command& Command::add_string(const std::string& name, const std::string& default_value,
                             const std::string& help, const std::string& metavar) {
  return add_flag(name, make_flag(Kind::kString, help, metavar, default_value));
}

Command& Command::add_switch(const std::string& name, const std::string& help) {
  return add_flag(name, make_flag(Kind::kSwitch, help, "", ""));
}

Command& Command::add_command(const std::string& name, const std::string& summary) {
  commands_.push_back(std::make_unique<Command>(name, summary, this));
  return *commands_.back();
}

Command& Command::set_run(Run run) {
  run_ = std::move(run);
  return *this;
}

Command& Command::set_epilog(const std::string& text) {
  epilog_ = text;
  return *this;
}

const Command::Flag& Command::flag(const std::string& name, std::optional<Kind> kind) const {
  for (const auto& [n, f] : flags_) {
    // A choice flag reads as a string.
    const bool fits =
        !kind || f.kind == *kind || (*kind == Kind::kString && f.kind == Kind::kChoice);
    if (n == name && fits) return f;
  }
  std::fprintf(stderr, "openmla: internal error: %s reads undeclared flag --%s\n", path().c_str(),
               name.c_str());
  std::abort();
}

std::string Command::path() const { return parent_ ? parent_->path() + " " + name_ : name_; }

std::string Command::flag_list() const {
  std::vector<std::string> names;
  for (const auto& kv : flags_) names.push_back("--" + kv.first);
  names.push_back("--help");
  return join(names, ", ");
}

std::string Command::help() const {
  std::ostringstream out;
  out << "usage: " << path() << (commands_.empty() ? "" : " <command>")
      << (flags_.empty() ? "" : " [flags]") << "\n";
  if (!summary_.empty()) out << summary_ << "\n";
  if (!commands_.empty()) {
    out << "\ncommands:\n";
    for (const auto& c : commands_) {
      std::string name = "  " + c->name_;
      name.resize(std::max<std::size_t>(name.size() + 2, 20), ' ');
      out << name << c->summary_ << "\n";
    }
    out << "\n'" << path() << " <command> --help' lists a command's flags.\n";
  }
  out << "\nflags:\n";
  for (const auto& [n, f] : flags_) {
    std::string head = "  --" + n + (f.metavar.empty() ? "" : " " + f.metavar);
    head.resize(std::max<std::size_t>(head.size() + 2, 30), ' ');
    out << head << f.help;
    if (f.kind == Kind::kInt) out << " (integer" << range_text(f.min, f.max) << ")";
    if (!f.default_text.empty()) out << " [default: " << f.default_text << "]";
    out << "\n";
  }
  out << "  -h, --help                  print this help and exit\n";
  if (!parent_) out << "  --version                   print the version and exit\n";
  if (!epilog_.empty()) out << "\n" << epilog_;
  return out.str();
}

std::string Command::check(const std::string& name, const Flag& f, const std::string& value) const {
  if (f.kind == Kind::kInt) {
    int64_t v = 0;
    if (!parse_int(value, &v) || v < f.min || v > f.max)
      return "--" + name + " must be an integer" + range_text(f.min, f.max) + ", got '" + value +
             "'";
  } else if (f.kind == Kind::kChoice) {
    for (const std::string& c : f.choices)
      if (c == value) return "";
    return "--" + name + " must be one of " + join(f.choices, ", ") + "; got '" + value + "'";
  }
  return "";
}

int Command::usage_error(const std::string& message) const {
  std::fprintf(stderr, "%s: %s\n(see '%s --help')\n", path().c_str(), message.c_str(),
               path().c_str());
  return 2;
}

int Command::main(int argc, char** argv, const std::string& version) {
  Command* cmd = this;
  Args args;
  bool help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      help = true;
      continue;
    }
    if (a == "--version" && cmd == this) {
      std::printf("openmla %s\n", version.c_str());
      return 0;
    }
    if (a.rfind("-", 0) != 0 || a == "-") {
      if (cmd->commands_.empty())
        return cmd->usage_error("unexpected argument '" + a + "' (this command takes flags only)");
      Command* next = nullptr;
      std::vector<std::string> names;
      for (const auto& c : cmd->commands_) {
        names.push_back(c->name_);
        if (c->name_ == a) next = c.get();
      }
      if (!next)
        return cmd->usage_error("unknown command '" + a + "'; choose from " + join(names, ", "));
      cmd = next;
      continue;
    }
    if (a.rfind("--", 0) != 0)
      return cmd->usage_error("unknown flag '" + a + "'; flags are " + cmd->flag_list());
    std::string name = a.substr(2), value;
    const std::size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const Flag* f = nullptr;
    for (const auto& kv : cmd->flags_)
      if (kv.first == name) f = &kv.second;
    if (!f) return cmd->usage_error("unknown flag '--" + name + "'; flags are " + cmd->flag_list());
    if (f->kind == Kind::kSwitch) {
      if (inline_value) return cmd->usage_error("--" + name + " takes no value");
    } else if (!inline_value) {
      if (i + 1 >= argc)
        return cmd->usage_error("--" + name + " needs a value (" +
                                (f->choices.empty() ? f->metavar : join(f->choices, ", ")) + ")");
      value = argv[++i];
    }
    const std::string error = cmd->check(name, *f, value);
    if (!error.empty()) return cmd->usage_error(error);
    args.given_[name] = value;
  }
  if (help) {
    std::printf("%s", cmd->help().c_str());
    return 0;
  }
  if (!cmd->run_) {
    std::fprintf(stderr, "%s", cmd->help().c_str());
    return 2;
  }
  args.command_ = cmd;
  return cmd->run_(args);
}

}  // namespace openmla::cli
