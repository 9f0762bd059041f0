# Regenerates src/analysis/opencv_hsv_table.rs.in (needs: pip install opencv-python-headless numpy).
# Not used at build or run time.
# Checks the integer RGB->HSV formula against OpenCV on all 2^24 colours, then writes a sample table.
import cv2, numpy as np
print("opencv", cv2.__version__)
r, g, b = np.meshgrid(np.arange(256), np.arange(256), np.arange(256), indexing="ij")
rgb = np.stack([r, g, b], -1).reshape(4096, 4096, 3).astype(np.uint8)
cv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int64)
R, G, B = [c.reshape(-1).astype(np.int64) for c in (r, g, b)]
sh = 12
i = np.arange(256)
sdiv = np.zeros(256, np.int64); hdiv = np.zeros(256, np.int64)
sdiv[1:] = ((255 << sh) + i[1:] // 2) // i[1:]
hdiv[1:] = ((180 << sh) + (6 * i[1:]) // 2) // (6 * i[1:])
V = np.maximum(np.maximum(R, G), B); diff = V - np.minimum(np.minimum(R, G), B)
S = (diff * sdiv[V] + 2048) >> sh
H = np.where(V == R, G - B, np.where(V == G, B - R + 2 * diff, R - G + 4 * diff))
H = (H * hdiv[diff] + 2048) >> sh
H = np.where(H < 0, H + 180, H)
mine = np.stack([H, S, V], -1)
bad = np.nonzero((mine != cv).any(-1))[0]
print("mismatches over 2^24 colours:", len(bad))
if len(bad): print(np.stack([R,G,B],-1)[bad[:10]], mine[bad[:10]], cv[bad[:10]])
rng = np.random.default_rng(3)
cols = [(0,0,0),(255,255,255),(255,0,0),(0,255,0),(0,0,255),(255,255,0),(0,255,255),(255,0,255),
        (128,128,128),(1,0,0),(0,1,0),(0,0,1),(255,0,1),(255,1,0),(1,255,0),(0,255,1),(1,0,255),(0,1,255),
        (254,255,255),(255,254,255),(255,255,254),(30,40,30),(30,39,30),(60,140,50),(135,206,235),
        (100,100,99),(99,100,100),(100,99,100),(40,40,41),(200,10,9),(9,200,10)]
cols += [tuple(int(x) for x in c) for c in rng.integers(0, 256, (300, 3))]
arr = np.array([cols], np.uint8)
hsv = cv2.cvtColor(arr, cv2.COLOR_RGB2HSV)[0]
with open(__import__("os").path.join(__import__("os").path.dirname(__file__), "..", "src", "analysis", "opencv_hsv_table.rs.in"), "w") as f:
    f.write("// Generated with opencv-python-headless %s: cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV) on uint8.\n" % cv2.__version__)
    f.write("[\n")
    for c, h in zip(cols, hsv):
        f.write("    ([%d, %d, %d], [%d, %d, %d]),\n" % (c + tuple(int(x) for x in h)))
    f.write("]\n")
print(len(cols), "rows written")
