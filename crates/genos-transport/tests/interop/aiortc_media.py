"""An independent WebRTC peer for genos's media interop test: aiortc answers genos's offer,
then takes part in genos's renegotiation over the hidden control channel (`_genos`), sends
its own VP8 video and Opus audio (encoded by aiortc) and decodes what genos sends back.

genos echoes every sample it receives from us on its own tracks, so what we decode is our own
frames after a trip through genos's depacketizer, frame reassembly and packetizer. Each video
frame we send is one flat shade (luma 20 + 4 * (17n mod 50), so that a lost or repeated
frame shows even though flat frames code as differences): decoding the echo tells which frame
it was, so we check the echoed frames come back whole and in order, not only their count.

Protocol over stdin/stdout, one JSON document per line:
  stdin  <- {"type": "offer", "sdp": "..."}   (candidates inside the SDP)
  stdout -> {"type": "answer", "sdp": "..."}  (after ICE gathering, candidates inside)
  stdout -> {"type": "report", ...}           once enough echoed frames were decoded (or the
                                              stream of them stopped)
The process exits when stdin closes.
"""
import asyncio
import fractions
import json
import sys

import av
from aiortc import (
    AudioStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

WIDTH, HEIGHT = 320, 240
VIDEO_WANTED = 40
AUDIO_WANTED = 60


def shade(n):
    return 20 + 4 * (n * 17 % 50)


class ShadeTrack(VideoStreamTrack):
    """Flat frames of changing shade, from the moment genos can receive them."""

    def __init__(self, start):
        super().__init__()
        self.start = start
        self.count = 0

    async def recv(self):
        await self.start.wait()
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(bytes([shade(self.count)]) * frame.planes[0].buffer_size)
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class GatedAudioTrack(AudioStreamTrack):
    """aiortc's 20 ms silence, from the moment genos can receive it."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    async def recv(self):
        await self.start.wait()
        return await super().recv()


def mean_luma(frame):
    plane = frame.planes[0]
    row = memoryview(plane)[plane.line_size * (HEIGHT // 2) :][:WIDTH]
    return sum(row) / len(row)


async def main():
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    offer = json.loads(line)
    pc = RTCPeerConnection()
    # Each of our tracks starts once genos says it applied the answer that first carried it:
    # packets sent earlier carry an SSRC it does not know yet. (answer number, gate)
    gates = []
    answers = 0
    video_gate, audio_gate = asyncio.Event(), asyncio.Event()
    video_out = ShadeTrack(video_gate)
    audio_out = GatedAudioTrack(audio_gate)
    report = {"type": "report", "video": 0, "audio": 0, "shades": [], "errors": []}
    finished = asyncio.Event()
    tasks = []

    async def consume_video(track):
        while report["video"] < VIDEO_WANTED:
            try:
                frame = await asyncio.wait_for(track.recv(), 20)
            except (MediaStreamError, asyncio.TimeoutError) as error:
                report["errors"].append(f"video: {type(error).__name__}")
                break
            if (frame.width, frame.height) != (WIDTH, HEIGHT):
                report["errors"].append(f"video frame of {frame.width}x{frame.height}")
            report["shades"].append(round(mean_luma(frame), 1))
            report["video"] += 1
        done()

    async def consume_audio(track):
        while report["audio"] < AUDIO_WANTED:
            try:
                frame = await asyncio.wait_for(track.recv(), 20)
            except (MediaStreamError, asyncio.TimeoutError) as error:
                report["errors"].append(f"audio: {type(error).__name__}")
                break
            if frame.sample_rate != 48000:
                report["errors"].append(f"audio at {frame.sample_rate} Hz")
            report["audio"] += 1
        done()

    def done():
        if sum(1 for task in tasks if task.done()) >= len(tasks) - 1:
            finished.set()

    @pc.on("track")
    def on_track(track):
        consume = consume_video if track.kind == "video" else consume_audio
        tasks.append(asyncio.ensure_future(consume(track)))

    @pc.on("datachannel")
    def on_datachannel(channel):
        if channel.label != "_genos":
            return

        async def on_offer(sdp):
            nonlocal answers
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            answers += 1
            sending = {t.kind for t in pc.getTransceivers() if t.sender.track is not None}
            for track, gate in ((video_out, video_gate), (audio_out, audio_gate)):
                offered = any(t.kind == track.kind for t in pc.getTransceivers())
                if offered and track.kind not in sending:
                    pc.addTrack(track)
                    gates.append((answers, gate))
            await pc.setLocalDescription(await pc.createAnswer())
            channel.send(json.dumps({"type": "answer", "sdp": pc.localDescription.sdp}))

        @channel.on("message")
        def on_message(message):
            try:
                control = json.loads(message)
            except ValueError:
                return  # genos's goodbye
            if control["type"] == "offer":
                asyncio.ensure_future(on_offer(control["sdp"]))
            elif control["type"] == "applied":
                for answer, gate in gates:
                    if answer <= control["answers"]:
                        gate.set()

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    sys.stdout.write(json.dumps({"type": "answer", "sdp": pc.localDescription.sdp}) + "\n")
    sys.stdout.flush()

    await finished.wait()
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    await loop.run_in_executor(None, sys.stdin.read)
    await pc.close()


asyncio.run(main())
