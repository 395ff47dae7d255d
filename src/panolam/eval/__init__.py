"""Evaluation: PSNR/SSIM/LPIPS/CSIM/APD over the front/back/left/right views, timings, and the report (JSON, Markdown, PNG grid).
"""
