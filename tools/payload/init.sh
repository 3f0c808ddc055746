#!/bin/sh
# netflash agent: /init of the initramfs that rpiboot serves to a node held in USB boot.
# It fetches the plan the controller made for this node's serial, streams and decompresses the
# image over Ethernet, writes only the plan's ranges to the plan's disk, reads every range back
# past the page cache, posts the digests and counts, and powers off. It writes to nothing else:
# everything under /tmp lives in the initramfs (RAM).
# busybox prefers its own applets to PATH: the real decoders are called by their full path.
# Kernel command line: netflash.server=http://ADDR:PORT netflash.addr=ADDR/PREFIX [netflash.if=eth0]

/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/usr/bin:/bin:/usr/sbin:/sbin LD_LIBRARY_PATH=/lib/aarch64-linux-gnu

SERVER=
ADDR=
IFACE=eth0
SERIAL=unknown
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        netflash.server=*) SERVER="${arg#netflash.server=}" ;;
        netflash.addr=*) ADDR="${arg#netflash.addr=}" ;;
        netflash.if=*) IFACE="${arg#netflash.if=}" ;;
    esac
done

log() { echo "netflash: $*" > /dev/console; }

halt_node() {
    sync
    log "powering off"
    poweroff -f
    sleep 60
}

# The report goes back as text lines; the controller decides, the agent only states what it saw.
post_report() {
    i=0
    while [ $i -lt 5 ]; do
        if wget -q -O /tmp/report.reply --post-file /tmp/report "$SERVER/report/$SERIAL"; then
            return 0
        fi
        i=$((i + 1))
        sleep 2
    done
    log "could not post the report to $SERVER"
}

fail() {
    log "FAILED: $*"
    {
        echo "status failed"
        echo "error $*"
        [ -f /tmp/counts ] && cat /tmp/counts
    } > /tmp/report
    [ -n "$SERVER" ] && [ -n "$NET_UP" ] && post_report
    halt_node
}

[ -n "$SERVER" ] || fail "no netflash.server= on the kernel command line"
[ -n "$ADDR" ] || fail "no netflash.addr= on the kernel command line"

if [ -f /etc/netflash/modules ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        insmod "/lib/modules/$mod" 2>/dev/null || log "module $mod not loaded"
    done < /etc/netflash/modules
fi

# The serial the firmware put in the device tree, as /proc/cpuinfo shows it on Raspberry Pi OS.
if [ -r /proc/device-tree/serial-number ]; then
    SERIAL=$(tr -d '\000' < /proc/device-tree/serial-number)
fi
case "$SERIAL" in
    *[!0-9a-fA-F]*|"") fail "no usable serial number in /proc/device-tree/serial-number" ;;
esac

i=0
while [ ! -e "/sys/class/net/$IFACE" ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
[ -e "/sys/class/net/$IFACE" ] || fail "interface $IFACE did not appear"
ip link set lo up
ip addr add "$ADDR" dev "$IFACE" || fail "cannot set $ADDR on $IFACE"
ip link set "$IFACE" up || fail "cannot bring $IFACE up"
NET_UP=1
log "serial $SERIAL, $ADDR on $IFACE, server $SERVER"

i=0
until wget -q -O /tmp/plan "$SERVER/plan/$SERIAL"; do
    i=$((i + 1))
    [ $i -lt 30 ] || fail "no plan for serial $SERIAL from $SERVER"
    sleep 1
done

PLAN_SERIAL=$(sed -n 's/^serial //p' /tmp/plan)
DEVICE=$(sed -n 's/^device //p' /tmp/plan)
COMPRESSION=$(sed -n 's/^compression //p' /tmp/plan)
IMAGE=$(sed -n 's/^image //p' /tmp/plan)
IMAGE_SIZE=$(sed -n 's/^image_size //p' /tmp/plan)
sed -n 's/^range //p' /tmp/plan > /tmp/ranges

head -n 1 /tmp/plan | grep -qx 'netflash-plan 1' || fail "plan format not understood"
# The bootloader prints the low 8 digits of the 16 the device tree holds: either names this node.
case "$SERIAL" in
    "$PLAN_SERIAL"|*[0-9a-f]"$PLAN_SERIAL") [ ${#PLAN_SERIAL} -ge 8 ] || fail "plan serial '$PLAN_SERIAL' too short" ;;
    *) fail "plan is for serial $PLAN_SERIAL, this node is $SERIAL" ;;
esac
case "$DEVICE" in
    /dev/mmcblk[0-9]|/dev/vd[a-z]) ;;
    *) fail "plan names device '$DEVICE', not a whole eMMC disk" ;;
esac
NAME=${DEVICE#/dev/}
i=0
while [ ! -e "/sys/block/$NAME" ] && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
[ -e "/sys/block/$NAME" ] && [ -b "$DEVICE" ] || fail "disk $DEVICE not present"
[ "$(cat /sys/block/$NAME/ro)" = 0 ] || fail "disk $DEVICE is read-only"
DISK_SIZE=$(( $(cat /sys/block/$NAME/size) * 512 ))
[ "$IMAGE_SIZE" -le "$DISK_SIZE" ] 2>/dev/null || fail "image ($IMAGE_SIZE bytes) larger than $DEVICE ($DISK_SIZE bytes)"
case "$COMPRESSION" in
    xz) DECODE="/usr/bin/xz -dc -T0" ;;
    zstd) DECODE="/usr/bin/zstd -dc" ;;
    none) DECODE="cat" ;;
    *) fail "unknown compression '$COMPRESSION'" ;;
esac

# Writes the plan's ranges from the decompressed stream on stdin, skipping what lies between.
write_ranges() {
    pos=0
    while read -r off len sum <&3; do
        gap=$((off - pos))
        if [ $gap -gt 0 ]; then
            dd of=/dev/null bs=1M count=$gap iflag=count_bytes,fullblock 2>/dev/null || return 1
        fi
        dd of="$DEVICE" bs=1M count=$len seek=$off iflag=count_bytes,fullblock \
            oflag=seek_bytes conv=notrunc 2>/dev/null || return 1
        pos=$((off + len))
    done 3< /tmp/ranges
    # Read to the end so the decoder finishes and checks its own integrity data.
    cat > /dev/null
}

log "writing $(wc -l < /tmp/ranges) ranges of a $COMPRESSION image to $DEVICE"
mkfifo /tmp/zcount /tmp/icount
wc -c < /tmp/zcount > /tmp/zbytes &
ZPID=$!
wc -c < /tmp/icount > /tmp/ibytes &
IPID=$!
{ wget -q -O - "$SERVER$IMAGE"; echo $? > /tmp/wget.rc; } | tee /tmp/zcount \
    | { $DECODE; echo $? > /tmp/decoder.rc; } | tee /tmp/icount \
    | { write_ranges; echo $? > /tmp/writer.rc; }
wait $ZPID $IPID
sync
{
    echo "download_status $(cat /tmp/wget.rc)"
    echo "decoder_status $(cat /tmp/decoder.rc)"
    echo "writer_status $(cat /tmp/writer.rc)"
    echo "compressed_bytes $(cat /tmp/zbytes)"
    echo "image_bytes $(cat /tmp/ibytes)"
} > /tmp/counts
[ "$(cat /tmp/wget.rc)" = 0 ] || fail "image download from $SERVER$IMAGE failed"
[ "$(cat /tmp/decoder.rc)" = 0 ] || fail "$COMPRESSION decoder failed (corrupt or truncated stream)"
[ "$(cat /tmp/writer.rc)" = 0 ] || fail "writing $DEVICE failed"
[ "$(cat /tmp/ibytes)" = "$IMAGE_SIZE" ] || fail "stream gave $(cat /tmp/ibytes) bytes, plan says $IMAGE_SIZE"

# Read back from the disk, not from the page cache.
blockdev --flushbufs "$DEVICE"
echo 3 > /proc/sys/vm/drop_caches
: > /tmp/digests
bad=0
# Besides each range's digest, one digest of all ranges in order: the content digest the
# controller records, as the USB method does.
mkfifo /tmp/content
sha256sum < /tmp/content > /tmp/content.sum &
CPID=$!
exec 4> /tmp/content
while read -r off len sum; do
    got=$(dd if="$DEVICE" bs=1M skip=$off count=$len iflag=skip_bytes,count_bytes,fullblock 2>/dev/null \
        | tee /proc/self/fd/4 | sha256sum | cut -d' ' -f1)
    echo "digest $off $len $got" >> /tmp/digests
    [ "$got" = "$sum" ] || bad=$((bad + 1))
done < /tmp/ranges
exec 4>&-
wait $CPID
{
    if [ $bad = 0 ]; then echo "status ok"; else echo "status failed"; echo "error $bad ranges read back wrong"; fi
    cat /tmp/counts
    echo "content_digest $(cut -d' ' -f1 /tmp/content.sum)"
    cat /tmp/digests
} > /tmp/report
log "verified: $bad ranges wrong"
post_report
halt_node
