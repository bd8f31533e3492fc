/* The least an epoll-based MQTT "broker" can do per connection, to measure the kernel's
 * share of a connect on this machine (benches/connects-vs-mosquitto.sh, FLOOR=1):
 * accept4, register, read CONNECT, write CONNACK, read DISCONNECT (or EOF), close. One
 * thread, level-triggered epoll, no session, no logging, no checks: it answers any first
 * packet starting with 0x10 with CONNACK 0 and closes on anything else. Not a broker;
 * never expose it.
 *
 *   cc -O2 -o target/connect-floor benches/connect-floor.c && target/connect-floor PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 18999;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    struct epoll_event evs[1024];
    char buf[4096];
    static const char connack[4] = {0x20, 0x02, 0x00, 0x00};
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) { if (r == 0) close(fd); continue; }
            if ((unsigned char)buf[0] == 0x10) { if (write(fd, connack, 4) < 0) close(fd); }
            else close(fd); /* DISCONNECT or anything else */
        }
    }
}
