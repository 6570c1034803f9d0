#include "tools/txchaos/local_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/check.h"
#include "tools/txchaos/control.h"

extern char** environ;

namespace tx::chaos {
namespace {

using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

bool PortIsFree(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Below the ephemeral range (32768+), so no outgoing connection takes the port of a process
// that is down and keeps it from listening again when restarted.
StatusOr<uint16_t> PickPort(std::set<uint16_t>* taken, std::mt19937* rng) {
  std::uniform_int_distribution<int> pick(20000, 32700);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    auto port = static_cast<uint16_t>(pick(*rng));
    if (taken->count(port) != 0 || !PortIsFree(port)) continue;
    taken->insert(port);
    return port;
  }
  return Status::ResourceExhausted("no free port in 20000-32700");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string LastLines(const std::string& text, int n) {
  size_t pos = text.size();
  for (int i = 0; i <= n && pos != std::string::npos && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
  }
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

uint64_t TreeBytes(const std::string& path) {
  std::error_code ec;
  uint64_t total = 0;
  if (!std::filesystem::exists(path, ec)) return 0;
  if (std::filesystem::is_regular_file(path, ec)) return std::filesystem::file_size(path, ec);
  for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

}  // namespace

std::string ExitEvent::Describe() const {
  if (WIFEXITED(wait_status)) return fmt::format("exited with status {}", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return fmt::format("killed by signal {} ({})", WTERMSIG(wait_status),
                       ::strsignal(WTERMSIG(wait_status)));
  }
  return fmt::format("ended with wait status {}", wait_status);
}

LocalCluster::LocalCluster(ClusterSpec spec) : spec_(std::move(spec)) {
  spawner_ = std::thread([this] { SpawnerLoop(); });
}

LocalCluster::~LocalCluster() {
  for (const std::string& name : Nodes()) Kill(name);
  {
    std::lock_guard<std::mutex> lock(spawn_mu_);
    spawner_stop_ = true;
  }
  spawn_cv_.notify_all();
  spawner_.join();
}

void LocalCluster::SpawnerLoop() {
  std::unique_lock<std::mutex> lock(spawn_mu_);
  while (true) {
    spawn_cv_.wait(lock, [&] { return spawner_stop_ || !spawn_queue_.empty(); });
    if (spawn_queue_.empty()) return;  // stopping
    std::packaged_task<pid_t()> task = std::move(spawn_queue_.front());
    spawn_queue_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

pid_t LocalCluster::Spawn(std::function<pid_t()> fork_and_exec) {
  std::packaged_task<pid_t()> task(std::move(fork_and_exec));
  std::future<pid_t> result = task.get_future();
  {
    std::lock_guard<std::mutex> lock(spawn_mu_);
    spawn_queue_.push_back(std::move(task));
  }
  spawn_cv_.notify_all();
  return result.get();
}

Status LocalCluster::Plan() {
  if (spec_.replicas < 1 || spec_.replicas > 9) {
    return Status::InvalidArgument(fmt::format("{} replicas (want 1..9)", spec_.replicas));
  }
  if (spec_.participants < 1 || spec_.participants > 64) {
    return Status::InvalidArgument(fmt::format("{} participants (want 1..64)", spec_.participants));
  }
  for (const char* program : {"txcoord", "txpart"}) {
    std::string path = spec_.bin_dir + "/" + program;
    if (::access(path.c_str(), X_OK) != 0) {
      return Status::NotFound(fmt::format("{} is missing (build it, or give --bin)", path));
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(spec_.work_dir, ec);
  if (ec) return Status::IOError(fmt::format("cannot create {}: {}", spec_.work_dir, ec.message()));
  {
    std::ofstream out(spec_.work_dir + "/init.sql");
    out << spec_.init_sql;
    if (!out) return Status::IOError("cannot write init.sql");
  }
  std::random_device rd;
  std::mt19937 rng(rd());
  std::set<uint16_t> taken;
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> coordinator_addresses;
  for (int id = 1; id <= spec_.replicas; ++id) {
    Node n;
    n.info.name = fmt::format("c{}", id);
    n.info.kind = NodeKind::kCoordinator;
    n.info.index = id;
    TX_ASSIGN_OR_RETURN(uint16_t port, PickPort(&taken, &rng));
    TX_ASSIGN_OR_RETURN(uint16_t metrics, PickPort(&taken, &rng));
    n.info.address = {"127.0.0.1", port};
    n.info.metrics = {"127.0.0.1", metrics};
    n.info.data = fmt::format("{}/{}", spec_.work_dir, n.info.name);
    peers_flag_ += fmt::format("{}{}={}", peers_flag_.empty() ? "" : ",", id, n.info.address);
    coordinator_addresses.push_back(ToString(n.info.address));
    nodes_.emplace(n.info.name, std::move(n));
  }
  coordinators_flag_ = fmt::format("{}", fmt::join(coordinator_addresses, ","));
  for (int i = 1; i <= spec_.participants; ++i) {
    Node n;
    n.info.name = fmt::format("p{}", i);
    n.info.kind = NodeKind::kParticipant;
    n.info.index = i;
    TX_ASSIGN_OR_RETURN(uint16_t port, PickPort(&taken, &rng));
    TX_ASSIGN_OR_RETURN(uint16_t metrics, PickPort(&taken, &rng));
    n.info.address = {"127.0.0.1", port};
    n.info.metrics = {"127.0.0.1", metrics};
    n.info.data = fmt::format("{}/{}.db", spec_.work_dir, n.info.name);
    nodes_.emplace(n.info.name, std::move(n));
  }
  for (auto& [name, n] : nodes_) {
    n.out_path = fmt::format("{}/{}.out", spec_.work_dir, name);
    n.log_path = fmt::format("{}/{}.log", spec_.work_dir, name);
  }
  return Status::OK();
}

void LocalCluster::SetEnv(const std::string& node, std::vector<std::string> env) {
  std::lock_guard<std::mutex> lock(mu_);
  At(node).env = std::move(env);
}

LocalCluster::Node& LocalCluster::At(const std::string& node) {
  auto it = nodes_.find(node);
  TX_CHECK(it != nodes_.end(), "no node named '{}'", node);
  return it->second;
}

const LocalCluster::Node& LocalCluster::At(const std::string& node) const {
  auto it = nodes_.find(node);
  TX_CHECK(it != nodes_.end(), "no node named '{}'", node);
  return it->second;
}

std::vector<std::string> LocalCluster::Argv(const Node& n) const {
  std::vector<std::string> argv;
  const NodeInfo& i = n.info;
  if (i.kind == NodeKind::kCoordinator) {
    argv = {spec_.bin_dir + "/txcoord",
            "--id",
            std::to_string(i.index),
            "--listen",
            ToString(i.address),
            "--peers",
            peers_flag_,
            "--data-dir",
            i.data,
            "--metrics-listen",
            ToString(i.metrics)};
    argv.insert(argv.end(), spec_.txcoord_flags.begin(), spec_.txcoord_flags.end());
  } else {
    argv = {spec_.bin_dir + "/txpart",
            "--name",
            i.name,
            "--db",
            i.data,
            "--listen",
            ToString(i.address),
            "--coordinators",
            coordinators_flag_,
            "--metrics-listen",
            ToString(i.metrics),
            "--init-sql",
            spec_.work_dir + "/init.sql"};
    argv.insert(argv.end(), spec_.txpart_flags.begin(), spec_.txpart_flags.end());
  }
  return argv;
}

Status LocalCluster::LaunchNode(const std::string& node,
                                const std::vector<std::string>& extra_env) {
  std::lock_guard<std::mutex> lock(mu_);
  Node& n = At(node);
  if (n.info.state != NodeState::kDown) {
    return Status::FailedPrecondition(fmt::format("{} is not down", node));
  }
  // Everything the child needs is built before fork(): after it, in a multi-threaded parent, the
  // child may only make async-signal-safe calls.
  std::vector<std::string> argv = Argv(n);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.insert(env.end(), n.env.begin(), n.env.end());
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> argv_c, env_c;
  for (std::string& a : argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  for (std::string& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);
  const std::string out_path = n.out_path, log_path = n.log_path;
  // The "listening on" line of the previous start must not count for this one.
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0 || log_fd < 0) {
    if (out_fd >= 0) ::close(out_fd);
    if (log_fd >= 0) ::close(log_fd);
    return Status::IOError(fmt::format("cannot open {} or {}", out_path, log_path));
  }
  const pid_t parent = ::getpid();
  int fork_errno = 0;
  pid_t pid = Spawn([&]() -> pid_t {
    pid_t child = ::fork();
    if (child != 0) {
      fork_errno = errno;
      return child;
    }
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    // Signals the parent blocks or ignores would be inherited; the child wants the defaults.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(argv_c[0], argv_c.data(), env_c.data());
    ::_exit(127);
  });
  ::close(out_fd);
  ::close(log_fd);
  if (pid < 0) return Status::FromErrno(fork_errno, "fork");
  n.info.pid = pid;
  n.info.state = NodeState::kRunning;
  ++n.info.starts;
  return Status::OK();
}

Status LocalCluster::AwaitServing(const std::string& node) {
  const auto deadline = SteadyClock::now() + spec_.start_timeout;
  std::string out_path, log_path;
  pid_t pid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Node& n = At(node);
    out_path = n.out_path;
    log_path = n.log_path;
    pid = n.info.pid;
  }
  while (true) {
    if (ReadFile(out_path).find("listening on ") != std::string::npos) return Status::OK();
    {
      std::lock_guard<std::mutex> lock(mu_);
      Node& n = At(node);
      if (n.info.pid != pid || n.info.state == NodeState::kDown) {
        return Status::Unavailable(fmt::format("{} exited while starting; its log ends:\n{}", node,
                                               LastLines(ReadFile(log_path), 5)));
      }
    }
    if (SteadyClock::now() > deadline) {
      return Status::TimedOut(fmt::format("{} did not start within {} ms; see {}", node,
                                          spec_.start_timeout.count(), log_path));
    }
    std::this_thread::sleep_for(20ms);
  }
}

Status LocalCluster::StartNode(const std::string& node, const std::vector<std::string>& extra_env) {
  TX_RETURN_IF_ERROR(LaunchNode(node, extra_env));
  return AwaitServing(node);
}

Status LocalCluster::Start() {
  for (const std::string& c : Coordinators()) TX_RETURN_IF_ERROR(LaunchNode(c));
  for (const std::string& c : Coordinators()) TX_RETURN_IF_ERROR(AwaitServing(c));
  TX_ASSIGN_OR_RETURN(std::string leader, AwaitLeader(spec_.start_timeout));
  for (const std::string& p : Participants()) TX_RETURN_IF_ERROR(LaunchNode(p));
  for (const std::string& p : Participants()) TX_RETURN_IF_ERROR(AwaitServing(p));
  const auto deadline = SteadyClock::now() + spec_.start_timeout;
  for (const std::string& p : Participants()) {
    Status s;
    do {
      std::optional<std::string> l = Leader(1s);
      s = l.has_value()
              ? RegisterParticipant(Info(*l).address, p, Info(p).address, std::chrono::seconds(5))
              : Status::Unavailable("no leader");
      if (s.ok()) break;
      std::this_thread::sleep_for(50ms);
    } while (SteadyClock::now() < deadline);
    if (!s.ok()) return s.Annotate(fmt::format("registering {}", p));
  }
  return Status::OK();
}

void LocalCluster::ReapLocked(Node& n) {
  if (n.info.pid <= 0) return;
  int status = 0;
  while (::waitpid(n.info.pid, &status, 0) < 0 && errno == EINTR) {
  }
  n.info.pid = -1;
  n.info.state = NodeState::kDown;
}

void LocalCluster::Kill(const std::string& node) {
  std::lock_guard<std::mutex> lock(mu_);
  Node& n = At(node);
  if (n.info.state == NodeState::kDown || n.info.pid <= 0) return;
  ::kill(n.info.pid, SIGKILL);
  ReapLocked(n);
}

void LocalCluster::Pause(const std::string& node) {
  std::lock_guard<std::mutex> lock(mu_);
  Node& n = At(node);
  if (n.info.state != NodeState::kRunning) return;
  ::kill(n.info.pid, SIGSTOP);
  n.info.state = NodeState::kPaused;
}

void LocalCluster::Resume(const std::string& node) {
  std::lock_guard<std::mutex> lock(mu_);
  Node& n = At(node);
  if (n.info.state != NodeState::kPaused) return;
  ::kill(n.info.pid, SIGCONT);
  n.info.state = NodeState::kRunning;
}

std::optional<int> LocalCluster::Terminate(const std::string& node,
                                           std::chrono::milliseconds timeout) {
  pid_t pid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Node& n = At(node);
    if (n.info.state == NodeState::kDown || n.info.pid <= 0) return std::nullopt;
    pid = n.info.pid;
    if (n.info.state == NodeState::kPaused) ::kill(pid, SIGCONT);
    ::kill(pid, SIGTERM);
    n.info.state = NodeState::kRunning;
  }
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Node& n = At(node);
      if (n.info.pid != pid) return std::nullopt;  // reaped elsewhere meanwhile
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        n.info.pid = -1;
        n.info.state = NodeState::kDown;
        return status;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  DumpThreadStacks(pid, fmt::format("{}/{}.stacks", spec_.work_dir, node));
  Kill(node);
  return std::nullopt;
}

void LocalCluster::DumpThreadStacks(pid_t pid, const std::string& path) {
  // Best effort, and only where gdb is installed: a process that ignores SIGTERM is stuck
  // somewhere (finding 3 in docs/reliability.md was such a hang), and its stacks are the one
  // clue a kill destroys. Bounded: gdb gets 30 s.
  if (::access("/usr/bin/gdb", X_OK) != 0) return;
  const std::string command = fmt::format(
      "timeout 30 /usr/bin/gdb -p {} -batch -ex 'thread apply all bt' >'{}' 2>&1", pid, path);
  (void)std::system(command.c_str());
  // Also on stderr, one line per thread, so that the clue reaches a CI log, where the run
  // directory is gone after the job.
  std::ifstream in(path);
  std::string summary = SummarizeThreadStacks(in);
  if (!summary.empty()) {
    std::fprintf(stderr, "txchaos: threads of pid %d, which ignored SIGTERM (%s):\n%s",
                 static_cast<int>(pid), path.c_str(), summary.c_str());
  }
}

std::vector<ExitEvent> LocalCluster::ReapExits() {
  std::vector<ExitEvent> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, n] : nodes_) {
    if (n.info.state == NodeState::kDown || n.info.pid <= 0) continue;
    int status = 0;
    if (::waitpid(n.info.pid, &status, WNOHANG) == n.info.pid) {
      n.info.pid = -1;
      n.info.state = NodeState::kDown;
      out.push_back({name, status});
    }
  }
  return out;
}

std::optional<std::string> LocalCluster::Leader(std::chrono::milliseconds timeout_per_call) {
  for (const std::string& c : Coordinators()) {
    NodeInfo info = Info(c);
    if (info.state != NodeState::kRunning) continue;
    StatusOr<api::ClusterStatusResponse> s = GetClusterStatus(info.address, timeout_per_call);
    if (s.ok() && s->role == "leader" && s->health == "OK") return c;
  }
  return std::nullopt;
}

StatusOr<std::string> LocalCluster::AwaitLeader(std::chrono::milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (std::optional<std::string> l = Leader(1s)) return *l;
    std::this_thread::sleep_for(50ms);
  }
  return Status::TimedOut(fmt::format("no leader within {} ms", timeout.count()));
}

std::vector<std::string> LocalCluster::Nodes() const {
  std::vector<std::string> out = Coordinators();
  for (const std::string& p : Participants()) out.push_back(p);
  return out;
}

std::vector<std::string> LocalCluster::Coordinators() const {
  std::vector<std::string> out;
  for (int id = 1; id <= spec_.replicas; ++id) out.push_back(fmt::format("c{}", id));
  return out;
}

std::vector<std::string> LocalCluster::Participants() const {
  std::vector<std::string> out;
  for (int i = 1; i <= spec_.participants; ++i) out.push_back(fmt::format("p{}", i));
  return out;
}

NodeInfo LocalCluster::Info(const std::string& node) const {
  std::lock_guard<std::mutex> lock(mu_);
  return At(node).info;
}

std::vector<HostPort> LocalCluster::CoordinatorAddresses() const {
  std::vector<HostPort> out;
  for (const std::string& c : Coordinators()) out.push_back(Info(c).address);
  return out;
}

uint64_t LocalCluster::RssBytes(const std::string& node) const {
  pid_t pid = Info(node).pid;
  if (pid <= 0) return 0;
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;  // "VmRSS:   1234 kB"
    }
  }
  return 0;
}

uint64_t LocalCluster::DiskBytes(const std::string& node) const {
  NodeInfo info = Info(node);
  if (info.kind == NodeKind::kCoordinator) return TreeBytes(info.data);
  return TreeBytes(info.data) + TreeBytes(info.data + "-wal");
}

uint64_t LocalCluster::SqliteWalBytes(const std::string& node) const {
  return TreeBytes(Info(node).data + "-wal");
}

std::string SummarizeThreadStacks(std::istream& gdb_output) {
  constexpr size_t kMaxFrames = 12;
  std::string out, thread;
  std::vector<std::string> frames;
  auto flush = [&] {
    if (!thread.empty()) {
      out += thread + ":";
      for (size_t i = 0; i < frames.size(); ++i) {
        out += i == 0 ? " " : " < ";
        out += frames[i];
      }
      if (frames.size() == kMaxFrames) out += " < ...";
      out += "\n";
    }
    thread.clear();
    frames.clear();
  };
  std::string line;
  while (std::getline(gdb_output, line)) {
    if (line.starts_with("Thread ")) {
      flush();
      // "Thread 3 (Thread 0x7f2a1c3fe6c0 (LWP 1234) "txpart"):" -> "Thread 3 (LWP 1234)"
      const size_t space = line.find(' ', 7);
      const size_t lwp = line.find("(LWP ");
      thread = line.substr(0, space);
      if (lwp != std::string::npos) {
        const size_t end = line.find(')', lwp);
        thread += ' ';
        thread.append(line, lwp, end == std::string::npos ? std::string::npos : end - lwp + 1);
      }
    } else if (!thread.empty() && line.starts_with("#") && frames.size() < kMaxFrames) {
      // "#1  0x000055d5 in tx::Writer::Submit (this=..., job=...) at writer.cc:242" or
      // "#2  __GI___futex_wait (...) at ..."
      size_t begin = line.find("  ");
      if (begin == std::string::npos) continue;
      begin += 2;
      if (line.compare(begin, 2, "0x") == 0) {
        const size_t in = line.find(" in ", begin);
        if (in == std::string::npos) continue;
        begin = in + 4;
      }
      const size_t end = line.find(" (", begin);
      frames.push_back(
          line.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    }
  }
  flush();
  return out;
}

}  // namespace tx::chaos
