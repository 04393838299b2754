"""An independent WebRTC peer for genos's interop test: aiortc answers an offer and echoes
every data-channel message back on the same channel.

Protocol over stdin/stdout, one JSON document per line:
  stdin  <- {"type": "offer", "sdp": "..."}   (candidates inside the SDP)
  stdout -> {"type": "answer", "sdp": "..."}  (after ICE gathering, candidates inside)
The process exits when stdin closes.
"""
import asyncio
import json
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription


async def main():
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    offer = json.loads(line)
    pc = RTCPeerConnection()

    @pc.on("datachannel")
    def on_datachannel(channel):
        @channel.on("message")
        def on_message(message):
            channel.send(message)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    answer = {"type": "answer", "sdp": pc.localDescription.sdp}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    # Serve until the test closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    await pc.close()


asyncio.run(main())
