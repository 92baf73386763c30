/*
 * egress-guard: preloaded into the QEMU of a sandbox in network mode `full`.
 *
 * QEMU's user-mode network (libslirp) opens a host socket for every guest
 * connection and maps the gateway address onto the host's loopback, with no
 * switch to turn that off. This library sits in front of connect(), sendto()
 * and sendmsg() and refuses IPv4/IPv6 destinations in the ranges the
 * supervisor lists, before the kernel sees them. Refusals are appended to a
 * log the supervisor turns into security.violation events.
 *
 * Environment (set by the supervisor; the guest cannot change it):
 *   SANDFORGE_EGRESS_DENY   rule=cidr[,rule=cidr...]   refused ranges, first match names the rule
 *   SANDFORGE_EGRESS_ALLOW  cidr[,cidr...]            allowed although in a refused range
 *   SANDFORGE_EGRESS_DNS    addr[,addr...]            the host's resolvers: port 53 allowed
 *   SANDFORGE_EGRESS_LOG    path                      refusals, one "address port rule" line each
 *
 * Unix sockets (QMP, the agent channel) and everything not AF_INET/AF_INET6
 * pass untouched. If the configuration cannot be parsed, every IP
 * destination is refused (fail closed).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_RANGES 256
#define MAX_LOG_BYTES (1 << 20)

struct range {
  int family;
  unsigned char addr[16];
  int prefix;
  char rule[40];
};

static struct range deny[MAX_RANGES], allow[MAX_RANGES], dns[MAX_RANGES];
static int ndeny, nallow, ndns;
static int broken; /* configuration unusable: refuse every IP destination */
static int log_fd = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);

static int parse_cidr(const char *s, struct range *r) {
  char buf[80];
  size_t n = strlen(s);
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, s, n + 1);
  char *slash = strchr(buf, '/');
  int prefix = -1;
  if (slash) {
    *slash = 0;
    char *end;
    long p = strtol(slash + 1, &end, 10);
    if (*end || end == slash + 1) return -1;
    prefix = (int)p;
  }
  if (inet_pton(AF_INET, buf, r->addr) == 1) {
    r->family = AF_INET;
    if (prefix < 0) prefix = 32;
    if (prefix > 32) return -1;
  } else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
    r->family = AF_INET6;
    if (prefix < 0) prefix = 128;
    if (prefix > 128) return -1;
  } else {
    return -1;
  }
  r->prefix = prefix;
  return 0;
}

/* Parses "a,b,c" (with optional "rule=" prefixes when named) into ranges. */
static int parse_list(const char *env, struct range *out, int *count, int named) {
  const char *v = getenv(env);
  *count = 0;
  if (!v || !*v) return 0;
  char *copy = strdup(v), *save = NULL;
  if (!copy) return -1;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (*count >= MAX_RANGES) goto fail;
    struct range *r = &out[*count];
    char *cidr = tok;
    strcpy(r->rule, "refused");
    if (named) {
      char *eq = strchr(tok, '=');
      if (!eq || eq - tok >= (long)sizeof r->rule) goto fail;
      memcpy(r->rule, tok, eq - tok);
      r->rule[eq - tok] = 0;
      cidr = eq + 1;
    }
    if (parse_cidr(cidr, r) != 0) goto fail;
    (*count)++;
  }
  free(copy);
  return 0;
fail:
  free(copy);
  return -1;
}

static void init(void) {
  real_connect = dlsym(RTLD_NEXT, "connect");
  real_sendto = dlsym(RTLD_NEXT, "sendto");
  real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
  if (parse_list("SANDFORGE_EGRESS_DENY", deny, &ndeny, 1) || parse_list("SANDFORGE_EGRESS_ALLOW", allow, &nallow, 0) ||
      parse_list("SANDFORGE_EGRESS_DNS", dns, &ndns, 0))
    broken = 1;
  const char *log = getenv("SANDFORGE_EGRESS_LOG");
  if (log && *log) log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

static int in_range(const struct range *r, int family, const unsigned char *a) {
  if (r->family != family) return 0;
  int full = r->prefix / 8, rest = r->prefix % 8;
  if (memcmp(r->addr, a, full) != 0) return 0;
  if (rest == 0) return 1;
  unsigned char mask = (unsigned char)(0xff << (8 - rest));
  return (r->addr[full] & mask) == (a[full] & mask);
}

static void log_refusal(int family, const unsigned char *a, int port, const char *rule) {
  if (log_fd < 0) return;
  struct stat st;
  if (fstat(log_fd, &st) == 0 && st.st_size > MAX_LOG_BYTES) return;
  char addr[INET6_ADDRSTRLEN], line[160];
  if (!inet_ntop(family, a, addr, sizeof addr)) return;
  int n = snprintf(line, sizeof line, "%s %d %s\n", addr, port, rule);
  if (n > 0 && n < (int)sizeof line) (void)!write(log_fd, line, (size_t)n);
}

/* 0: allowed; -1: refused (errno set). */
static int judge(const struct sockaddr *sa, socklen_t len) {
  pthread_once(&once, init);
  if (!sa) return 0;
  int family;
  unsigned char a[16];
  int port;
  if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    family = AF_INET;
    memcpy(a, &in->sin_addr, 4);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      family = AF_INET; /* ::ffff:127.0.0.1 is 127.0.0.1 */
      memcpy(a, (const unsigned char *)&in6->sin6_addr + 12, 4);
    } else {
      family = AF_INET6;
      memcpy(a, &in6->sin6_addr, 16);
    }
  } else if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
    errno = EINVAL;
    return -1;
  } else {
    return 0;
  }
  if (broken) {
    log_refusal(family, a, port, "guard_misconfigured");
    errno = EACCES;
    return -1;
  }
  if (port == 53)
    for (int i = 0; i < ndns; i++)
      if (in_range(&dns[i], family, a)) return 0;
  for (int i = 0; i < nallow; i++)
    if (in_range(&allow[i], family, a)) return 0;
  for (int i = 0; i < ndeny; i++) {
    if (in_range(&deny[i], family, a)) {
      log_refusal(family, a, port, deny[i].rule);
      errno = ECONNREFUSED;
      return -1;
    }
  }
  return 0;
}

int connect(int fd, const struct sockaddr *sa, socklen_t len) {
  if (judge(sa, len) != 0) return -1;
  return real_connect(fd, sa, len);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa, socklen_t len) {
  if (judge(sa, len) != 0) return -1;
  return real_sendto(fd, buf, n, flags, sa, len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  if (msg && judge((const struct sockaddr *)msg->msg_name, msg->msg_namelen) != 0) return -1;
  return real_sendmsg(fd, msg, flags);
}
