/* The packet walk of both programs: Ethernet, VLAN tags, IPv4 or IPv6 with its extension
 * headers, to the TCP/UDP header. fastban/packets.py walks recorded frames the same way, with
 * the same limits (bpf/abi.h): FB_VLAN_TAGS_MAX tags (802.1Q, 802.1ad, 0x9100), FB_IPV6_EXT_MAX
 * extension headers (hop-by-hop, routing, fragment, AH, destination options).
 *
 * A template: the including program defines how to read bytes, then includes this file,
 *   FB_WALK_NAME    the function's name
 *   FB_WALK_CTX     its context type (struct xdp_md, struct __sk_buff)
 *   FB_WALK_READ(ctx, offset, buffer, length)
 *                   a pointer to `length` bytes of the frame at `offset` (in the packet, or
 *                   copied to `buffer`, which holds 40 bytes), or NULL past the end
 * and gets  static int FB_WALK_NAME(FB_WALK_CTX *ctx, struct fb_walk *walk): 1 when the frame
 * is IPv4 or IPv6 and `walk` is filled in, 0 when it is neither or is cut short.
 */
#ifndef FASTBAN_WALK_TYPES
#define FASTBAN_WALK_TYPES

struct fb_walk {
    __u8 saddr[16];         /* IPv4 in the first 4 bytes */
    __u8 daddr[16];
    __u32 l4_off;           /* the TCP/UDP header (0 when none can be read: a later fragment) */
    __u32 l3_end;           /* the end of the IP packet (before any Ethernet padding) */
    __u8 family;            /* 4 or 6 */
    __u8 l4proto;           /* after the extension headers */
    __u8 first_fragment;    /* an IP first fragment: more of the datagram follows */
    __u8 later_fragment;    /* an IP fragment past the first: no TCP/UDP header in it */
};

static __always_inline int fb_is_vlan(__be16 proto)
{
    return proto == htons(FB_ETH_P_8021Q) || proto == htons(FB_ETH_P_8021AD) ||
           proto == htons(FB_ETH_P_QINQ);
}

static __always_inline int fb_is_ipv6_extension(__u8 proto)
{
    return proto == FB_IPPROTO_HOPOPTS || proto == FB_IPPROTO_ROUTING ||
           proto == FB_IPPROTO_FRAGMENT || proto == FB_IPPROTO_AH ||
           proto == FB_IPPROTO_DSTOPTS;
}

#endif /* FASTBAN_WALK_TYPES */

static __always_inline int FB_WALK_NAME(FB_WALK_CTX *ctx, struct fb_walk *walk)
{
    __u8 buffer[40];
    __u32 off = 12;                         /* the EtherType */
    __u8 *bytes = FB_WALK_READ(ctx, off, buffer, 2);
    if (!bytes)
        return 0;
    __be16 proto = *(__be16 *)bytes;
    off = 14;
#pragma unroll
    for (int i = 0; i < FB_VLAN_TAGS_MAX; i++) {
        if (!fb_is_vlan(proto))
            break;
        bytes = FB_WALK_READ(ctx, off + 2, buffer, 2);
        if (!bytes)
            return 0;
        proto = *(__be16 *)bytes;
        off += 4;
    }

    if (proto == htons(FB_ETH_P_IP)) {
        struct iphdr *ip = FB_WALK_READ(ctx, off, buffer, sizeof(struct iphdr));
        if (!ip)
            return 0;
        __u16 fragment = ntohs(ip->frag_off);
        walk->family = 4;
        walk->l4proto = ip->protocol;
        walk->later_fragment = (fragment & 0x1FFF) != 0;
        walk->first_fragment = !walk->later_fragment && (fragment & 0x2000);
        __builtin_memcpy(walk->saddr, &ip->saddr, 4);
        __builtin_memcpy(walk->daddr, &ip->daddr, 4);
        walk->l3_end = off + ntohs(ip->tot_len);
        off += ip->ihl * 4;
    } else if (proto == htons(FB_ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = FB_WALK_READ(ctx, off, buffer, sizeof(struct ipv6hdr));
        if (!ip6)
            return 0;
        walk->family = 6;
        walk->l4proto = ip6->nexthdr;
        walk->later_fragment = 0;
        walk->first_fragment = 0;
        __builtin_memcpy(walk->saddr, &ip6->saddr, 16);
        __builtin_memcpy(walk->daddr, &ip6->daddr, 16);
        off += sizeof(struct ipv6hdr);
        walk->l3_end = off + ntohs(ip6->payload_len);
#pragma unroll
        for (int i = 0; i < FB_IPV6_EXT_MAX; i++) {
            __u8 next = walk->l4proto;
            if (!fb_is_ipv6_extension(next))
                break;
            __u8 *ext = FB_WALK_READ(ctx, off, buffer, 4);
            if (!ext)
                return 0;
            if (next == FB_IPPROTO_FRAGMENT) {
                if ((ext[2] << 5 | ext[3] >> 3) != 0)
                    walk->later_fragment = 1;
                else if (ext[3] & 1)
                    walk->first_fragment = 1;
                off += 8;
            } else if (next == FB_IPPROTO_AH) {
                off += (ext[1] + 2) * 4;
            } else {
                off += (ext[1] + 1) * 8;
            }
            walk->l4proto = ext[0];
            if (off > FB_WALK_MAX_OFFSET)
                return 0;
        }
    } else {
        return 0;
    }
    walk->l4_off = walk->later_fragment ? 0 : off;
    return 1;
}

#undef FB_WALK_NAME
#undef FB_WALK_CTX
#undef FB_WALK_READ
