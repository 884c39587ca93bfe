/* fastban benchmark sender: prebuilt Ethernet frames out of one interface, as fast as it can.
 *
 *   sender IFACE FRAMES_FILE MAX_PACKETS MAX_SECONDS [BATCH [RATE [QDISC]]]
 *
 * FRAMES_FILE holds the frames back to back, each preceded by its length (u16, little endian);
 * they are sent in turn, round and round, through an AF_PACKET socket (qdisc bypassed) with
 * sendmmsg() in batches of BATCH (default 32), at most RATE packets/s when RATE > 0 (paced per
 * batch, spinning), through the qdisc and TC egress hooks when QDISC is 1. Stops after MAX_PACKETS or MAX_SECONDS, whichever
 * comes first, and prints one JSON line: {"sent", "errors", "seconds", "utime", "stime"}
 * (its own rusage: the kernel charges it the softirq ticks taken in its context too).
 * Built on the fly by benchmarks/drop_rig.py (gcc -O2); runs inside the sender's namespace.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAMES 262144
#define MAX_BATCH 256

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s IFACE FRAMES_FILE MAX_PACKETS MAX_SECONDS [BATCH [RATE "
                "[QDISC]]]\n", argv[0]);
        return 2;
    }
    const char *iface = argv[1];
    long long max_packets = atoll(argv[3]);
    double max_seconds = atof(argv[4]);
    int batch = argc > 5 ? atoi(argv[5]) : 32;
    if (batch < 1 || batch > MAX_BATCH)
        batch = 32;
    double rate = argc > 6 ? atof(argv[6]) : 0;
    int through_qdisc = argc > 7 ? atoi(argv[7]) : 0;

    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror("frames file");
        return 1;
    }
    static struct iovec frames[MAX_FRAMES];
    int nframes = 0;
    uint16_t len;
    while (nframes < MAX_FRAMES && fread(&len, 2, 1, f) == 1) {
        void *buf = malloc(len);
        if (!buf || fread(buf, 1, len, f) != len) {
            fprintf(stderr, "truncated frames file\n");
            return 1;
        }
        frames[nframes].iov_base = buf;
        frames[nframes].iov_len = len;
        nframes++;
    }
    fclose(f);
    if (nframes == 0) {
        fprintf(stderr, "no frames\n");
        return 1;
    }

    int fd = socket(AF_PACKET, SOCK_RAW, 0);      /* protocol 0: send only, receive nothing */
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int one = 1;
    if (!through_qdisc)
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    struct sockaddr_ll addr = {0};
    addr.sll_family = AF_PACKET;
    addr.sll_ifindex = if_nametoindex(iface);
    if (addr.sll_ifindex == 0) {
        fprintf(stderr, "no interface %s\n", iface);
        return 1;
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("bind");
        return 1;
    }

    static struct mmsghdr msgs[MAX_BATCH];
    long long sent = 0, errors = 0;
    int next = 0;
    double start = now(), deadline = start + max_seconds, end;
    while (sent < max_packets) {
        if (rate > 0)
            while (now() < start + sent / rate)
                ;
        int n = batch;
        if (max_packets - sent < n)
            n = (int)(max_packets - sent);
        for (int i = 0; i < n; i++) {
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &frames[next];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if (++next == nframes)
                next = 0;
        }
        int done = sendmmsg(fd, msgs, n, 0);
        if (done < 0) {
            errors++;
            if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
                perror("sendmmsg");
                break;
            }
            done = 0;
        }
        sent += done;
        if (now() >= deadline)      /* vDSO clock: a few ns per batch */
            break;
    }
    end = now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"sent\": %lld, \"errors\": %lld, \"seconds\": %.6f, \"utime\": %.6f, "
           "\"stime\": %.6f}\n", sent, errors, end - start,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return 0;
}
