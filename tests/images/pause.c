/* The sandbox ("pause") process of every pod on the test node: it holds the pod's namespaces,
 * reaps zombies, and exits 0 on SIGINT or SIGTERM. Built statically into the pause image. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("cogo-pause\n");
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "cogo-pause: warning: not running as PID 1\n");
  }
  struct sigaction term = {.sa_handler = stop};
  struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("cogo-pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
